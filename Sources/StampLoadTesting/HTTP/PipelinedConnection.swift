import NIOCore
import NIOHTTP1

/// One keep-alive connection of a ``PipelinedHTTPClient``: writes requests as they come and
/// matches each answer to the oldest request not yet answered, as HTTP/1.1 orders them.
///
/// A request not answered by its deadline fails when ``expire(now:)`` looks, and the connection
/// is closed, since every answer behind it would come late. When the connection closes, each
/// request still outstanding fails. Used on its channel's event loop only.
final class PipelinedConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    /// A request written and not yet answered.
    private struct Outstanding {
        let deadline: NIODeadline
        let bodyLimit: Int
        let answer: (Result<PipelinedHTTPClient.Answer, PipelinedHTTPError>) -> Void
    }

    private var outstanding = CircularBuffer<Outstanding>(initialCapacity: 16)
    private var context: ChannelHandlerContext?
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    /// Whether requests were written since the last flush.
    private(set) var needsFlush = false
    /// The first failure, which every request outstanding when the connection closes is failed with.
    private var closing: PipelinedHTTPError?
    /// Called once, when the channel has closed and every outstanding request has failed.
    var closed: (() -> Void)?

    /// Requests written and not yet answered.
    var outstandingCount: Int { outstanding.count }

    /// Whether the connection can take requests.
    var isOpen: Bool { context != nil && closing == nil }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes `request`, to be flushed by ``flush()``; `answer` hears its answer or why there is none.
    func send(
        _ request: PipelinedHTTPClient.Request,
        deadline: NIODeadline,
        bodyLimit: Int,
        answer: @escaping (Result<PipelinedHTTPClient.Answer, PipelinedHTTPError>) -> Void
    ) {
        guard let context, closing == nil else {
            answer(.failure(PipelinedHTTPError(.notConnected, "the connection is closed")))
            return
        }
        outstanding.append(Outstanding(deadline: deadline, bodyLimit: bodyLimit, answer: answer))
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: request.method, uri: request.target, headers: request.headers))), promise: nil)
        if let body = request.body {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
        needsFlush = true
    }

    /// Sends what ``send(_:deadline:bodyLimit:answer:)`` wrote.
    func flush() {
        needsFlush = false
        context?.flush()
    }

    /// Fails the oldest request when its deadline has passed at `now`, and closes the connection:
    /// the requests behind it fail as closed.
    func expire(now: NIODeadline) {
        guard let first = outstanding.first, first.deadline <= now else { return }
        outstanding.removeFirst()
        close(because: PipelinedHTTPError(.connectionClosed, "closed after an earlier request on it timed out"))
        first.answer(.failure(PipelinedHTTPError(.timedOut, "no answer within the timeout")))
    }

    /// Closes the connection; every request outstanding fails with `error`.
    func close(because error: PipelinedHTTPError) {
        guard closing == nil else { return }
        closing = error
        if let context {
            context.close(promise: nil)
        } else {
            failOutstanding()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = nil
        case .body(var part):
            guard let request = outstanding.first else {
                close(because: PipelinedHTTPError(.protocolViolation, "an answer came with no request outstanding"))
                return
            }
            guard request.bodyLimit > 0 else { return }
            if body == nil {
                body = part
            } else {
                body!.writeBuffer(&part)
            }
            if body!.readableBytes > request.bodyLimit {
                close(because: PipelinedHTTPError(.answerTooLarge, "an answer's body exceeded \(request.bodyLimit) bytes"))
            }
        case .end:
            guard let head, !outstanding.isEmpty else {
                close(because: PipelinedHTTPError(.protocolViolation, "an answer came with no request outstanding"))
                return
            }
            let request = outstanding.removeFirst()
            let answer = PipelinedHTTPClient.Answer(status: head.status, headers: head.headers, body: body ?? ByteBuffer())
            self.head = nil
            body = nil
            request.answer(.success(answer))
            if head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "close" }) {
                close(because: PipelinedHTTPError(.connectionClosed, "the server closed the connection"))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if closing == nil { closing = PipelinedHTTPError(.connectionClosed, "the server closed the connection") }
        failOutstanding()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(because: PipelinedHTTPError(.connectionClosed, "the connection failed", cause: error))
    }

    /// Fails every outstanding request with the closing error, then says the connection is closed.
    private func failOutstanding() {
        let error = closing ?? PipelinedHTTPError(.connectionClosed, "the connection closed")
        while let request = outstanding.popFirst() {
            request.answer(.failure(error))
        }
        if let closed {
            self.closed = nil
            closed()
        }
    }
}
