import Hummingbird
import Synchronization

/// A bare Hummingbird endpoint that returns a counter in the shape of `GET /v1/ids`: the
/// baseline `scripts/bench-serve` compares a generator node with, in the same run.
@main
struct BareHummingbird {
    static func main() async throws {
        let port = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 7490
        let counter = Atomic<Int64>(0)
        let router = Router()
        router.get("/v1/ids") { _, _ in
            let value = counter.add(1, ordering: .relaxed).newValue
            return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"ids":["\#(value)"],"node":0}"#)))
        }
        let application = Application(router: router, configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: port)))
        try await application.runService()
    }
}
