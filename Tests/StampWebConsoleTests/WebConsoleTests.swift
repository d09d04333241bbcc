import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import StampWebConsole
import Testing

@Suite("Web console")
struct WebConsoleTests {
    static let page = """
        {{<layout}}
        {{$title}}Test page{{/title}}
        {{$heading}}node {{node}}{{/heading}}
        {{$content}}<p id="said">{{said}}</p>{{>token-form}}{{/content}}
        {{$scripts}}<script src="/ui/assets/page.js"></script>{{/scripts}}
        {{/layout}}
        """

    func withConsole(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let console = try WebConsole(pages: ["test": Self.page], assets: [.script("page.js", "console.log('page');\n")])
        let router = Router()
        router.get("/ui") { _, _ in try console.page("test", context: ["node": "3", "said": #"<script>alert("x")</script> & 'more'"#, "tokenLabel": "Reader token"]) }
        router.get("/ui/private") { _, _ in try console.page("test", context: ["node": "3"], personalData: true) }
        router.get("/ui/missing") { _, _ in try console.page("layout", context: [:]) }
        console.addAssetRoute(to: router)
        try await Application(router: router).test(.router) { client in try await body(client) }
    }

    static func expectSecurityHeaders(_ response: TestResponse, cache: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let policy = response.headers[HTTPField.Name("Content-Security-Policy")!] ?? ""
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"] {
            #expect(policy.contains(directive), "missing \(directive)", sourceLocation: sourceLocation)
        }
        #expect(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval") && !policy.contains("http"), sourceLocation: sourceLocation)
        #expect(response.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff", sourceLocation: sourceLocation)
        #expect(response.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer", sourceLocation: sourceLocation)
        #expect(response.headers[.cacheControl] == cache, sourceLocation: sourceLocation)
    }

    @Test func aPageIsTheLayoutFilledInWithValuesEscaped() async throws {
        try await withConsole { client in
            try await client.execute(uri: "/ui", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                Self.expectSecurityHeaders(response, cache: "no-cache")
                let html = String(buffer: response.body)
                #expect(html.hasPrefix("<!doctype html>"))
                #expect(html.contains("<title>Test page · Stamp</title>"))
                #expect(html.contains(#"<span class="heading">node 3</span>"#))
                #expect(html.contains(#"<p id="said">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;more&#39;</p>"#))
                #expect(!html.contains("<script>alert"))
                #expect(html.contains(#"<label for="console-token">Reader token</label>"#))
                #expect(html.contains(#"<noscript><p class="message bad">This console needs JavaScript"#), "without scripts, the page says why it does nothing")
                // The shared script first, then the page's; no inline script or style anywhere.
                let shared = try #require(html.range(of: #"<script src="/ui/assets/console.js"></script>"#))
                let own = try #require(html.range(of: #"<script src="/ui/assets/page.js"></script>"#))
                #expect(shared.upperBound <= own.lowerBound)
                #expect(!html.contains("<script>") && !html.contains("<style") && !html.contains("style=") && !html.contains("onclick"))
                #expect(!html.contains("http://") && !html.contains("https://"))
                #expect(html.contains(#"<link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml">"#))
            }
        }
    }

    @Test func aPageWithPersonalDataIsNeverStored() async throws {
        try await withConsole { client in
            try await client.execute(uri: "/ui/private", method: .get) { response in
                #expect(response.status == .ok)
                Self.expectSecurityHeaders(response, cache: "no-store")
            }
        }
    }

    @Test func assetsAreServedWithTheirTypesAndTheHeaders() async throws {
        try await withConsole { client in
            for (name, type, sample) in [
                // The hidden attribute wins over any display a rule gives an element.
                ("console.css", "text/css; charset=utf-8", "[hidden] { display: none !important; }"),
                ("console.js", "text/javascript; charset=utf-8", "const StampConsole"),
                ("page.js", "text/javascript; charset=utf-8", "console.log('page')"),
                ("favicon.svg", "image/svg+xml", "<svg"),
            ] {
                try await client.execute(uri: "/ui/assets/\(name)", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentType] == type)
                    Self.expectSecurityHeaders(response, cache: "no-cache")
                    #expect(String(buffer: response.body).contains(sample))
                }
            }
            for name in ["nothing.js", "..%2Fconsole.js", "CONSOLE.CSS"] {
                try await client.execute(uri: "/ui/assets/\(name)", method: .get) { response in
                    #expect(response.status == .notFound)
                }
            }
        }
    }

    @Test func theSharedTemplatesAreNoPages() async throws {
        try await withConsole { client in
            try await client.execute(uri: "/ui/missing", method: .get) { response in
                #expect(response.status == .internalServerError)
            }
        }
    }

    @Test func aConsoleRefusesBrokenTemplatesAndTakenNames() {
        #expect(throws: WebConsoleError.self) { try WebConsole(pages: ["broken": "{{#open}}never closed"]) }
        #expect(throws: WebConsoleError.self) { try WebConsole(pages: ["layout": "mine"]) }
        #expect(throws: WebConsoleError.self) { try WebConsole(pages: [:], assets: [.stylesheet("console.css", "")]) }
        #expect(throws: WebConsoleError.self) { try WebConsole(pages: [:], assets: [.script("a.js", ""), .script("a.js", "")]) }
    }

    @Test(arguments: [
        ("/ui/assets/console.css", true), ("/ui/assets/a", true), ("/ui/assets/", false), ("/ui/assets", false),
        ("/ui/assets/a/b", false), ("/ui", false), ("/ui/assetsx/a", false),
    ])
    func assetPaths(path: String, isAsset: Bool) {
        #expect(WebConsole.isAssetPath(path) == isAsset)
    }
}
