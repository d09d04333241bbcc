@testable import StampCoordinationEtcd
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The JSON of etcd's gateway as the store reads and writes it: base64 bytes, 64-bit integers as
/// strings, zero values left out, and refusals flat or (in a streamed answer) nested.
@Suite("etcd gateway messages")
struct EtcdGatewayMessageTests {
    @Test("a transaction is written with base64 keys and values and decimal-string revisions and leases")
    func writesTransactions() throws {
        let request = EtcdTransactionRequest(
            compare: [EtcdCompare(key: EtcdBytes("p/k"), modRevision: EtcdInt64(0))],
            success: [.put(EtcdPutRequest(key: EtcdBytes("p/k"), value: EtcdBytes("v"), lease: EtcdInt64(7_061_822_563_070_275_089)))],
            failure: [.range(EtcdRangeRequest(key: EtcdBytes("p/"), rangeEnd: EtcdBytes("p/").prefixEnd)), .delete(EtcdDeleteRequest(key: EtcdBytes("p/k")))]
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let text = String(decoding: try encoder.encode(request), as: UTF8.self)
        #expect(text == #"{"compare":[{"key":"cC9r","mod_revision":"0","result":"EQUAL","target":"MOD"}],"failure":[{"request_range":{"key":"cC8=","range_end":"cDA="}},{"request_delete_range":{"key":"cC9r"}}],"success":[{"request_put":{"key":"cC9r","lease":"7061822563070275089","value":"dg=="}}]}"#)
    }

    @Test("answers are read with their zero values left out")
    func readsAnswers() throws {
        let range = try JSONDecoder().decode(EtcdRangeResponse.self, from: Data(#"{"header":{"revision":"4"},"kvs":[{"key":"cC9r","create_revision":"3","mod_revision":"3","version":"1","value":"NQ=="}],"count":"1"}"#.utf8))
        let pair = try #require(range.kvs?.first)
        #expect(pair.key.text == "p/k")
        #expect(pair.value?.text == "5")
        #expect(pair.modRevision == EtcdInt64(3))
        #expect(pair.lease == nil)
        #expect(try JSONDecoder().decode(EtcdRangeResponse.self, from: Data(#"{"header":{"revision":"4"}}"#.utf8)).kvs == nil)
        #expect(try JSONDecoder().decode(EtcdTransactionResponse.self, from: Data(#"{"header":{"revision":"4"},"responses":[{"response_put":{}}]}"#.utf8)).succeeded == nil)
        let kept = try JSONDecoder().decode(EtcdStreamedLease.self, from: Data(#"{"result":{"header":{},"ID":"12345","TTL":"10"}}"#.utf8))
        #expect(kept.result?.ttl == EtcdInt64(10))
        let gone = try JSONDecoder().decode(EtcdStreamedLease.self, from: Data(#"{"result":{"header":{},"ID":"12345"}}"#.utf8))
        #expect(gone.result?.ttl == nil)
    }

    @Test("refusals are read flat and nested, and an answer is no refusal")
    func readsRefusals() throws {
        let flat = try JSONDecoder().decode(EtcdGatewayRefusal.self, from: Data(#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#.utf8))
        #expect(flat.code == 5)
        #expect(flat.message == "etcdserver: requested lease not found")
        let nested = try JSONDecoder().decode(EtcdGatewayRefusal.self, from: Data(#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#.utf8))
        #expect(nested.code == 14)
        #expect(nested.message == "etcdserver: no leader")
        #expect((try? JSONDecoder().decode(EtcdGatewayRefusal.self, from: Data(#"{"header":{"revision":"1"},"ID":"1","TTL":"2"}"#.utf8))) == nil)
    }

    @Test("a prefix's range ends at the next key past every key that starts with it")
    func prefixEnds() {
        #expect(EtcdBytes("stamp/nodes/").prefixEnd == EtcdBytes("stamp/nodes0"))
        #expect(EtcdBytes(bytes: [0x61, 0xFF]).prefixEnd == EtcdBytes(bytes: [0x62]))
        #expect(EtcdBytes(bytes: [0xFF]).prefixEnd == EtcdBytes(bytes: [0]))
    }
}
