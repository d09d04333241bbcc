import Foundation

/// A TCP socket listening on a loopback port that the system chose (port 0).
///
/// A process that can take a listening socket from its parent (HAProxy's `bind fd@3`) gets this
/// one, so that no other process can take the port between its choice and its use.
public final class LoopbackListener: Sendable {
    /// The socket's descriptor, close-on-exec: a child gets it only through ``ChildProcess/Launch/inheritedDescriptors``.
    public let descriptor: Int32
    /// The port the system bound.
    public let port: Int

    /// Binds 127.0.0.1:0 and listens.
    public init() throws(LoadTestingError) {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else { throw LoadTestingError(.setupFailed, "cannot open a socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, length) == 0 && listen(socket, 1024) == 0 && getsockname(socket, $0, &length) == 0
            }
        }
        guard listening else {
            let reason = String(cString: strerror(errno))
            _ = Glibc.close(socket)
            throw LoadTestingError(.setupFailed, "cannot listen on a loopback port: \(reason)")
        }
        descriptor = socket
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// Closes this process's copy of the socket; a child that was given it keeps listening.
    public func close() {
        _ = Glibc.close(descriptor)
    }
}
