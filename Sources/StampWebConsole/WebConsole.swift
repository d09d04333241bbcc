import HTTPTypes
import Hummingbird
import Mustache
import NIOCore
import StampHTTP

/// A server's web console: its pages, mustache templates rendered inside the shared layout, and its
/// static assets, answered with the console's security headers.
///
/// Templates, the stylesheet and scripts are Swift string constants compiled into the binary rather
/// than SwiftPM resources: a resource bundle lives in a folder beside the executable, which a copied
/// `stamp` binary leaves behind, and the console must keep working wherever the binary goes.
///
/// A page template inherits the layout (see ``ConsoleLayout``):
///
/// ```mustache
/// {{<layout}}
/// {{$title}}Cluster{{/title}}
/// {{$content}}<h1>{{heading}}</h1>{{/content}}
/// {{$scripts}}<script src="/ui/assets/cluster.js"></script>{{/scripts}}
/// {{/layout}}
/// ```
///
/// Values are HTML-escaped (`{{name}}`); never use triple mustaches for anything a caller sent.
public struct WebConsole: Sendable {
    /// The path under which every asset is served: `/ui/assets/{name}`.
    public static let assetsPath = "/ui/assets"

    private let library: MustacheLibrary
    private let assets: [String: WebAsset]

    /// A console of `pages` (template text by page name) and `assets`, beside the shared templates
    /// (`layout` and the `token-form` partial) and the shared assets `console.css`, `console.js`
    /// and `favicon.svg`.
    ///
    /// - Throws: ``WebConsoleError`` when a template does not parse, or a page or asset takes a
    ///   shared name.
    public init(pages: [String: String], assets: [WebAsset] = []) throws(WebConsoleError) {
        var library = MustacheLibrary()
        for name in ConsoleLayout.templates.keys where pages[name] != nil {
            throw WebConsoleError(.nameTaken, "the page name '\(name)' is a shared template's")
        }
        for (name, text) in ConsoleLayout.templates.merging(pages, uniquingKeysWith: { shared, _ in shared }).sorted(by: { $0.key < $1.key }) {
            do {
                try library.register(text, named: name)
            } catch {
                throw WebConsoleError(.templateDoesNotParse, "the template '\(name)' does not parse: \(error)")
            }
        }
        var byName: [String: WebAsset] = [:]
        for asset in ConsoleLayout.assets + assets {
            guard byName[asset.name] == nil else { throw WebConsoleError(.nameTaken, "two assets are named '\(asset.name)'") }
            byName[asset.name] = asset
        }
        self.library = library
        self.assets = byName
    }

    /// The HTML answer of page `name` rendered with `context` (a dictionary or any value whose
    /// properties the template names).
    ///
    /// - Parameters:
    ///   - personalData: Whether the page shows personal data: it is then never stored by the
    ///     browser or a proxy (`Cache-Control: no-store`).
    /// - Throws: ``Problem`` (500) for a page the console does not have.
    public func page(_ name: String, context: Any, personalData: Bool = false, status: HTTPResponse.Status = .ok) throws -> Response {
        guard ConsoleLayout.templates[name] == nil, let html = library.render(context, withTemplate: name) else {
            throw Problem(.internalError, status: .internalServerError, detail: "the console has no page '\(name)'")
        }
        var headers = Self.securityHeaders(personalData: personalData)
        headers[.contentType] = "text/html; charset=utf-8"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    /// The asset named `name`, if the console has it.
    public func asset(named name: String) -> WebAsset? {
        assets[name]
    }

    /// Adds `GET /ui/assets/{name}`, answering every asset with the security headers, and 404 (a
    /// problem) for any other name.
    public func addAssetRoute<Context: RequestContext>(to router: Router<Context>) {
        router.get("\(Self.assetsPath)/:name") { _, context in
            let name = context.parameters.get("name") ?? ""
            guard let asset = asset(named: name) else {
                throw Problem(.notFound, status: .notFound, detail: "no asset named '\(name.prefix(40))'")
            }
            var headers = Self.securityHeaders(personalData: false)
            headers[.contentType] = asset.contentType
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: asset.text)))
        }
    }

    /// Whether `path` is an asset's path, `/ui/assets/{name}` with a name of one segment.
    public static func isAssetPath(_ path: some StringProtocol) -> Bool {
        let prefix = assetsPath + "/"
        guard path.hasPrefix(prefix) else { return false }
        let name = path.dropFirst(prefix.count)
        return !name.isEmpty && !name.contains("/")
    }

    /// The `Content-Security-Policy` of every console answer: nothing but scripts, styles, images
    /// and requests from the server itself; no inline script or style, no plugins, no framing, and
    /// forms that post only back to the server.
    public static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

    /// The headers every console answer carries: ``contentSecurityPolicy``, no MIME sniffing, no
    /// referrer, and `Cache-Control: no-store` for personal data (`no-cache` otherwise, so that a
    /// browser always asks again).
    public static func securityHeaders(personalData: Bool) -> HTTPFields {
        [
            .contentSecurityPolicy: contentSecurityPolicy,
            .xContentTypeOptions: "nosniff",
            .referrerPolicy: "no-referrer",
            .cacheControl: personalData ? "no-store" : "no-cache",
        ]
    }
}

/// A static asset of a web console, served at `/ui/assets/{name}`.
public struct WebAsset: Sendable {
    /// The file name in the asset's path, such as `cluster.js`.
    public let name: String
    public let contentType: String
    public let text: String

    public init(name: String, contentType: String, text: String) {
        self.name = name
        self.contentType = contentType
        self.text = text
    }

    /// A JavaScript file.
    public static func script(_ name: String, _ text: String) -> WebAsset {
        WebAsset(name: name, contentType: "text/javascript; charset=utf-8", text: text)
    }

    /// A stylesheet.
    public static func stylesheet(_ name: String, _ text: String) -> WebAsset {
        WebAsset(name: name, contentType: "text/css; charset=utf-8", text: text)
    }
}

/// A web console that cannot be built: a template that does not parse or a name taken twice.
public struct WebConsoleError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, stable across releases.
    public enum Code: String, Sendable {
        case templateDoesNotParse = "template-does-not-parse"
        case nameTaken = "name-taken"
    }

    public let code: Code
    /// Which template or asset, and why; safe to show.
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

extension HTTPField.Name {
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
}
