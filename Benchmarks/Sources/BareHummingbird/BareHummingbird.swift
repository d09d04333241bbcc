import Foundation
import Hummingbird
import Synchronization

/// A bare Hummingbird endpoint that returns a counter in the shape of `GET /v1/ids`: the
/// baseline `scripts/bench-serve` compares a generator node with, in the same run.
///
/// Arguments: the port (default 7490; 0 binds a free one), then a file to write the port bound
/// to once it listens, as `stamp serve --port-file` does.
@main
struct BareHummingbird {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        let port = arguments.first.flatMap(Int.init) ?? 7490
        let portFile = arguments.dropFirst().first
        let counter = Atomic<Int64>(0)
        let router = Router()
        router.get("/v1/ids") { _, _ in
            let value = counter.add(1, ordering: .relaxed).newValue
            return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"ids":["\#(value)"],"node":0}"#)))
        }
        let application = Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { channel in
                guard let portFile, let bound = channel.localAddress?.port else { return }
                try? Data("\(bound)\n".utf8).write(to: URL(fileURLWithPath: portFile), options: .atomic)
            }
        )
        try await application.runService()
    }
}
