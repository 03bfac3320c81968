//! Scoped API keys and tenants (issue 22, item 9): a matrix of keys × routes × collections ×
//! keyspaces where nothing outside a key's scope is readable or writable; tenant isolation through
//! vector, hybrid and GET search, document reads, lists and deletes; quotas; revocation; the
//! audit log; keys surviving a restart.

mod common;

use common::{Resp, Server};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-keys-1";

fn call(s: &Server, token: &str, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let auth = format!("Bearer {token}");
    let mut h = vec![("Authorization", auth.as_str())];
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    if body.is_some() {
        h.push(("Content-Type", "application/json"));
    }
    s.req(method, path, &h, bytes.as_bytes())
}

fn ok(r: Resp) -> Value {
    assert!(r.status < 300, "{} {}", r.status, r.text());
    r.json()
}

/// Makes a key; returns (id, token).
fn make_key(s: &Server, spec: Value) -> (String, String) {
    let r = call(s, ADMIN, "POST", "/v1/keys", Some(&spec));
    assert_eq!(r.status, 201, "{spec}: {}", r.text());
    let j = r.json();
    (
        j["id"].as_str().unwrap().to_owned(),
        j["token"].as_str().unwrap().to_owned(),
    )
}

fn doc(id: &str, body: &str, v: [f32; 4], org: Option<&str>) -> Value {
    let mut d = json!({"id": id, "text": {"body": body}, "vectors": {"v": v}});
    if let Some(o) = org {
        d["fields"] = json!({ "org": o });
    }
    d
}

fn ids(hits: &Value) -> Vec<String> {
    let mut v: Vec<String> = hits
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {hits}"))
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn setup(s: &Server) {
    let tenanted = json!({"vectors": {"v": {"dim": 4, "metric": "cosine"}}, "text_fields": ["body"],
                          "fields": {"org": "keyword", "n": "integer"}, "tenant_field": "org"});
    let plain = json!({"vectors": {"v": {"dim": 4, "metric": "cosine"}}, "text_fields": ["body"],
                       "fields": {"org": "keyword"}});
    for (name, schema) in [
        ("shared", &tenanted),
        ("team-a-notes", &plain),
        ("team-b-notes", &plain),
    ] {
        ok(call(
            s,
            ADMIN,
            "PUT",
            &format!("/v2/collections/{name}"),
            Some(schema),
        ));
        ok(call(
            s,
            ADMIN,
            "POST",
            &format!("/v2/collections/{name}/documents"),
            Some(
                &json!({"documents": [doc("seed", "hello seed", [1.0, 0.0, 0.0, 0.0], Some("admin"))]}),
            ),
        ));
    }
    for ks in ["team-a", "team-b"] {
        ok(call(
            s,
            ADMIN,
            "POST",
            "/v1/keyspaces",
            Some(&json!({ "name": ks })),
        ));
        ok(call(
            s,
            ADMIN,
            "PUT",
            &format!("/v1/kv/1?keyspace={ks}"),
            None,
        ));
    }
}

/// What a key is, for the model the matrix checks the server against.
struct Key {
    token: String,
    role: u8, // 0 read, 1 write, 2 admin
    collections: &'static [&'static str],
    keyspaces: &'static [&'static str],
    tenant: bool,
}

#[derive(Clone, Copy)]
enum Target {
    Collection(&'static str),
    Keyspace(&'static str),
    Node,
}

fn glob_match(globs: &[&str], name: &str) -> bool {
    globs.iter().any(|g| match g.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => *g == name,
    })
}

impl Key {
    fn may(&self, need: u8, t: Target) -> bool {
        self.role >= need
            && match t {
                Target::Collection(c) => {
                    glob_match(self.collections, c) && (!self.tenant || c == "shared")
                }
                Target::Keyspace(k) => glob_match(self.keyspaces, k),
                Target::Node => {
                    self.collections == ["*"] && self.keyspaces == ["*"] && !self.tenant
                }
            }
    }
}

/// Every route kind against every collection and keyspace, with each key: allowed exactly when
/// the model says so (allowed: neither 401 nor 403; refused: 403 `forbidden`).
#[test]
fn a_key_reaches_exactly_its_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_API_KEYS", &format!("admin:{ADMIN}"))],
    );
    setup(&s);
    let spec = |role: &str, c: &[&str], k: &[&str], tenant: Option<&str>| {
        let mut j = json!({"role": role, "collections": c, "keyspaces": k});
        if let Some(t) = tenant {
            j["tenant"] = json!(t);
        }
        make_key(&s, j).1
    };
    let keys = [
        Key {
            token: spec("read", &["team-a-*"], &["team-a"], None),
            role: 0,
            collections: &["team-a-*"],
            keyspaces: &["team-a"],
            tenant: false,
        },
        Key {
            token: spec("write", &["team-b-notes"], &["team-b", "default"], None),
            role: 1,
            collections: &["team-b-notes"],
            keyspaces: &["team-b", "default"],
            tenant: false,
        },
        Key {
            token: spec("write", &["*"], &["team-a"], Some("acme")),
            role: 1,
            collections: &["*"],
            keyspaces: &["team-a"],
            tenant: true,
        },
        Key {
            token: spec("admin", &["team-a-*"], &["team-a"], None),
            role: 2,
            collections: &["team-a-*"],
            keyspaces: &["team-a"],
            tenant: false,
        },
        Key {
            token: spec("read", &["*"], &["*"], None),
            role: 0,
            collections: &["*"],
            keyspaces: &["*"],
            tenant: false,
        },
        Key {
            token: spec("admin", &["*"], &["*"], None),
            role: 2,
            collections: &["*"],
            keyspaces: &["*"],
            tenant: false,
        },
    ];
    type Route = (u8, &'static str, String, Option<Value>, Target);
    // Each key writes documents and keys of its own (`m-<key>`), so what a refused write would
    // have left behind can be looked for afterwards.
    let routes_for = |ki: usize| -> Vec<Route> {
        let m = format!("m-{ki}");
        let mut routes: Vec<Route> = Vec::new();
        for c in ["shared", "team-a-notes", "team-b-notes"] {
            let t = Target::Collection(c);
            let q = json!({"vector": [1.0, 0.0, 0.0, 0.0], "limit": 5});
            routes.extend([
                (0, "GET", format!("/v2/collections/{c}"), None, t),
                (0, "POST", format!("/v2/collections/{c}/search"), Some(q), t),
                (
                    0,
                    "GET",
                    format!("/v2/search?collection={c}&q=hello"),
                    None,
                    t,
                ),
                (
                    0,
                    "POST",
                    "/v2/search/hybrid".into(),
                    Some(json!({"collection": c, "text_search": "hello"})),
                    t,
                ),
                (0, "GET", format!("/v2/collections/{c}/documents"), None, t),
                (
                    0,
                    "GET",
                    format!("/v2/collections/{c}/documents/seed"),
                    None,
                    t,
                ),
                (
                    1,
                    "POST",
                    format!("/v2/collections/{c}/documents"),
                    Some(json!({"documents": [doc(&m, "matrix", [0.0, 1.0, 0.0, 0.0], None)]})),
                    t,
                ),
                (
                    1,
                    "POST",
                    "/v2/documents/stream".into(),
                    Some({
                        let mut d = doc(&format!("{m}-s"), "matrix", [0.0, 1.0, 0.0, 0.0], None);
                        d["collection"] = json!(c);
                        d
                    }),
                    t,
                ),
                (
                    1,
                    "DELETE",
                    format!("/v2/collections/{c}/documents/nothing-here"),
                    None,
                    t,
                ),
                (
                    2,
                    "POST",
                    format!("/v2/collections/{c}/reembed"),
                    Some(json!({})),
                    t,
                ),
            ]);
        }
        for k in ["team-a", "team-b", "default"] {
            let t = Target::Keyspace(k);
            routes.extend([
                (0, "GET", format!("/v1/kv/1?keyspace={k}"), None, t),
                (0, "GET", format!("/v1/scan?keyspace={k}"), None, t),
                (
                    0,
                    "POST",
                    "/v1/kv/batch_get".into(),
                    Some(json!({"keyspace": k, "keys": [1]})),
                    t,
                ),
                (0, "GET", format!("/v1/keyspaces/{k}"), None, t),
                (
                    1,
                    "POST",
                    "/v1/put".into(),
                    Some(json!({"keyspace": k, "key": 100 + ki, "value": "v"})),
                    t,
                ),
                (
                    1,
                    "POST",
                    "/v1/kv/batch_delete".into(),
                    Some(json!({"keyspace": k, "keys": [3]})),
                    t,
                ),
                (
                    2,
                    "POST",
                    "/v1/keyspaces".into(),
                    Some(json!({"name": k})),
                    t,
                ),
            ]);
        }
        routes.push((
            0,
            "GET",
            "/v1/get_fast/1".into(),
            None,
            Target::Keyspace("default"),
        ));
        routes.extend([
            (2, "POST", "/v1/snapshot".into(), None, Target::Node),
            (2, "POST", "/v1/warmup".into(), None, Target::Node),
            (2, "GET", "/v1/keys".into(), None, Target::Node),
            (2, "GET", "/v1/audit".into(), None, Target::Node),
            (
                2,
                "GET",
                "/v1/backups/20250101T000000.000Z".into(),
                None,
                Target::Node,
            ),
            (0, "GET", "/metrics".into(), None, Target::Node),
        ]);
        routes
    };
    let mut checked = 0;
    for (ki, k) in keys.iter().enumerate() {
        for (need, m, p, body, t) in &routes_for(ki) {
            let r = call(&s, &k.token, m, p, body.as_ref());
            let want = k.may(*need, *t);
            if want {
                assert!(
                    r.status != 401 && r.status != 403 && r.status < 500,
                    "key {ki} {m} {p}: expected allowed, got {} {}",
                    r.status,
                    r.text()
                );
            } else {
                assert_eq!(
                    r.status,
                    403,
                    "key {ki} {m} {p}: expected 403, got {}",
                    r.text()
                );
                assert_eq!(r.error_code(), "forbidden", "key {ki} {m} {p}");
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked}");
    // A refused write wrote nothing; an allowed one did.
    for (ki, k) in keys.iter().enumerate() {
        for c in ["shared", "team-a-notes", "team-b-notes"] {
            let r = call(
                &s,
                ADMIN,
                "GET",
                &format!("/v2/collections/{c}/documents/m-{ki}"),
                None,
            );
            let want = if k.may(1, Target::Collection(c)) {
                200
            } else {
                404
            };
            assert_eq!(r.status, want, "key {ki} in {c}: {}", r.text());
        }
        for ks in ["team-a", "team-b", "default"] {
            let r = call(
                &s,
                ADMIN,
                "GET",
                &format!("/v1/kv/{}?keyspace={ks}", 100 + ki),
                None,
            );
            let want = if k.may(1, Target::Keyspace(ks)) {
                200
            } else {
                404
            };
            assert_eq!(r.status, want, "key {ki} in keyspace {ks}: {}", r.text());
        }
    }
    // Lists show only what a key reaches.
    let names = |token: &str, path: &str, field: &str| -> Vec<String> {
        let j = ok(call(&s, token, "GET", path, None));
        let mut v: Vec<String> = j[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&keys[0].token, "/v2/collections", "collections"),
        ["team-a-notes"]
    );
    assert_eq!(
        names(&keys[2].token, "/v2/collections", "collections"),
        ["shared"]
    );
    assert_eq!(
        names(&keys[1].token, "/v1/keyspaces", "keyspaces"),
        ["default", "team-b"]
    );
    assert_eq!(
        names(&keys[4].token, "/v1/keyspaces", "keyspaces"),
        ["default", "team-a", "team-b"]
    );
}

/// A tenant key sees and changes only its tenant's documents, whatever the request asks.
#[test]
fn tenants_are_isolated_in_every_read_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_API_KEYS", &format!("admin:{ADMIN}"))],
    );
    setup(&s);
    let (_, acme) = make_key(
        &s,
        json!({"role": "write", "collections": ["shared"], "tenant": "acme"}),
    );
    let (globex_id, globex) = make_key(
        &s,
        json!({"role": "write", "collections": ["shared"], "tenant": "globex",
               "quotas": {"documents": 3}}),
    );
    let up = |token: &str, docs: Vec<Value>| {
        call(
            &s,
            token,
            "POST",
            "/v2/collections/shared/documents",
            Some(&json!({ "documents": docs })),
        )
    };
    let e = [1.0, 0.0, 0.0, 0.0];
    ok(up(
        &acme,
        vec![
            doc("a1", "hello acme one", e, None),
            doc("a2", "hello acme two", e, Some("acme")),
        ],
    ));
    ok(up(
        &globex,
        vec![
            doc("g1", "hello globex one", e, None),
            doc("g2", "hello globex two", e, None),
            doc("g3", "hello globex three", e, None),
        ],
    ));
    // Writes are stamped: the admin sees org = acme on a1.
    let a1 = ok(call(
        &s,
        ADMIN,
        "GET",
        "/v2/collections/shared/documents/a1",
        None,
    ));
    assert_eq!(a1["fields"]["org"], json!("acme"), "{a1}");
    // Reads: vector, hybrid (BM25 and fused), GET search, with filters trying to widen.
    let acme_ids = vec!["a1".to_owned(), "a2".to_owned()];
    let none: Vec<String> = vec![];
    let widen = [
        (json!(null), &acme_ids),
        (json!({"org": "globex"}), &none),
        (
            json!({"should": [{"key": "org", "match": "globex"}, {"key": "org", "match": "acme"}]}),
            &acme_ids,
        ),
        (
            json!({"must_not": [{"key": "org", "match": "acme"}]}),
            &none,
        ),
    ];
    for (f, want) in &widen {
        let want = *want;
        let mut q = json!({"vector": e, "limit": 50});
        let mut h = json!({"collection": "shared", "text_search": "hello", "limit": 50});
        let mut hv = json!({"collection": "shared", "text_search": "hello", "limit": 50,
                            "vector_similarity": {"embedding": e, "using": "v"}});
        if !f.is_null() {
            q["filter"] = f.clone();
            h["metadata_filters"] = f.clone();
            hv["metadata_filters"] = f.clone();
        }
        let r = ok(call(
            &s,
            &acme,
            "POST",
            "/v2/collections/shared/search",
            Some(&q),
        ));
        let got = ids(&r["hits"]);
        assert!(got.iter().all(|i| i.starts_with('a')), "{f}: {got:?}");
        let r = ok(call(&s, &acme, "POST", "/v2/search/hybrid", Some(&h)));
        let got_h = ids(&r["hits"]);
        assert!(got_h.iter().all(|i| i.starts_with('a')), "{f}: {got_h:?}");
        let r = ok(call(&s, &acme, "POST", "/v2/search/hybrid", Some(&hv)));
        let got_hv = ids(&r["hits"]);
        assert!(got_hv.iter().all(|i| i.starts_with('a')), "{f}: {got_hv:?}");
        assert_eq!(&got, want, "{f}");
        assert_eq!(&got_h, want, "{f}");
        assert_eq!(&got_hv, want, "{f}");
    }
    let r = ok(call(
        &s,
        &acme,
        "GET",
        "/v2/search?collection=shared&q=hello&org=globex",
        None,
    ));
    assert_eq!(ids(&r["hits"]), Vec::<String>::new());
    let r = ok(call(
        &s,
        &acme,
        "GET",
        "/v2/search?collection=shared&q=hello",
        None,
    ));
    assert_eq!(ids(&r["hits"]), acme_ids);
    // The admin sees everyone's.
    let r = ok(call(
        &s,
        ADMIN,
        "GET",
        "/v2/search?collection=shared&q=hello",
        None,
    ));
    assert_eq!(ids(&r["hits"]).len(), 6, "{r}");
    // Document reads, lists, info.
    let r = call(
        &s,
        &acme,
        "GET",
        "/v2/collections/shared/documents/g1",
        None,
    );
    assert_eq!(
        (r.status, r.error_code()),
        (404, "document_not_found".into())
    );
    let r = ok(call(
        &s,
        &acme,
        "GET",
        "/v2/collections/shared/documents?limit=100",
        None,
    ));
    assert_eq!(ids(&r["documents"]), acme_ids);
    let info = ok(call(&s, &acme, "GET", "/v2/collections/shared", None));
    assert_eq!(info["documents"], json!(2), "{info}");
    assert_eq!(info["tenants"]["documents"], json!({"acme": 2}), "{info}");
    let info = ok(call(&s, ADMIN, "GET", "/v2/collections/shared", None));
    assert_eq!(
        info["tenants"]["documents"],
        json!({"acme": 2, "globex": 3, "admin": 1}),
        "{info}"
    );
    // Writes cannot reach another tenant's documents.
    let r = up(&acme, vec![doc("g1", "taken over", e, None)]);
    assert_eq!(
        (r.status, r.error_code()),
        (403, "tenant_mismatch".into()),
        "{}",
        r.text()
    );
    let r = up(
        &acme,
        vec![doc("a3", "x", e, None), doc("a4", "x", e, Some("globex"))],
    );
    assert_eq!(
        (r.status, r.error_code()),
        (403, "tenant_mismatch".into()),
        "{}",
        r.text()
    );
    assert!(r.text().contains("documents[1].fields.org"), "{}", r.text());
    let r = call(
        &s,
        &acme,
        "DELETE",
        "/v2/collections/shared/documents/g1",
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = ok(call(
        &s,
        &acme,
        "POST",
        "/v2/collections/shared/documents/delete",
        Some(&json!({"ids": ["g1", "g2", "a3"]})),
    ));
    assert_eq!(r, json!({"deleted": 0, "absent": 3}));
    let r = ok(call(
        &s,
        &acme,
        "POST",
        "/v2/collections/shared/documents/delete",
        Some(&json!({"filter": {"org": "globex"}})),
    ));
    assert_eq!(r["deleted"], json!(0));
    let g1 = ok(call(
        &s,
        ADMIN,
        "GET",
        "/v2/collections/shared/documents/g1",
        None,
    ));
    assert_eq!(g1["text"]["body"], json!("hello globex one"), "{g1}");
    assert_eq!(
        call(
            &s,
            ADMIN,
            "GET",
            "/v2/collections/shared/documents/a3",
            None
        )
        .status,
        404,
        "a refused batch writes nothing"
    );
    // Whole-collection actions and feedback are not a tenant's.
    let r = call(
        &s,
        &acme,
        "POST",
        "/v2/collections/shared/feedback",
        Some(&json!({"query": "hello", "relevant": ["a1"]})),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // The documents quota: globex holds 3 of 3; replacing one is fine, adding one is refused.
    ok(up(&globex, vec![doc("g1", "hello globex again", e, None)]));
    let r = up(&globex, vec![doc("g4", "one too many", e, None)]);
    assert_eq!(
        (r.status, r.error_code()),
        (403, "quota_exceeded".into()),
        "{}",
        r.text()
    );
    // Deleting through the tenant's own key works.
    let r = ok(call(
        &s,
        &acme,
        "DELETE",
        "/v2/collections/shared/documents/a2",
        None,
    ));
    assert_eq!(r["deleted"], json!(1));
    // Keys survive a restart (durable in the engine); a revoked key is refused at once.
    s.term();
    s.restart();
    let r = ok(call(
        &s,
        &acme,
        "GET",
        "/v2/collections/shared/documents?limit=100",
        None,
    ));
    assert_eq!(ids(&r["documents"]), ["a1"]);
    ok(call(
        &s,
        ADMIN,
        "DELETE",
        &format!("/v1/keys/{globex_id}"),
        None,
    ));
    let r = call(&s, &globex, "GET", "/v2/collections/shared", None);
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".into()));
    let r = call(&s, ADMIN, "DELETE", &format!("/v1/keys/{globex_id}"), None);
    assert_eq!(
        (r.status, r.error_code()),
        (404, "api_key_not_found".into())
    );
}

/// Keys are managed by admins only, listed without secrets, checked on input; quotas on
/// request rate; every admin action lands in the audit log with who did it and the outcome.
#[test]
fn key_management_quotas_and_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_API_KEYS", &format!("admin:{ADMIN}"))],
    );
    let (id, token) = make_key(
        &s,
        json!({"role": "admin", "name": "team a", "collections": ["team-a-*"], "keyspaces": ["team-a"]}),
    );
    assert!(token.starts_with("kdb_") && token.len() == 68, "{token}");
    let listed = call(&s, ADMIN, "GET", "/v1/keys", None);
    let text = listed.text();
    assert!(
        !text.contains(&token[4..]),
        "a token is never shown again: {text}"
    );
    assert!(!text.contains("digest"), "{text}");
    let keys = listed.json();
    assert_eq!(keys["keys"][0]["id"], json!(id));
    assert_eq!(keys["keys"][0]["name"], json!("team a"));
    // Bad specs: 400 naming the problem, nothing stored.
    for bad in [
        json!({"role": "root", "collections": ["*"]}),
        json!({"role": "read", "collections": ["a/b"]}),
        json!({"role": "read", "collections": ["*"], "name": "a\u{1}b"}),
        json!({"role": "read", "collections": ["*"], "quotas": {"requests_per_s": 1.5}}),
        json!({"role": "read", "collections": ["*"], "quotas": {"requests_per_s": 4294967296u64}}),
        json!({"role": "read", "collections": ["*"], "quotas": {"documents": 5}}),
        json!({"role": "read", "collections": ["*"], "quotas": {"requests_per_s": 0}}),
        json!({"role": "read", "collections": ["*"], "colections": ["*"]}),
        json!({"role": "read", "collections": ["*"], "tenant": ""}),
    ] {
        let r = call(&s, ADMIN, "POST", "/v1/keys", Some(&bad));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        let code = r.error_code();
        assert!(
            code == "invalid_api_key" || code == "invalid_request",
            "{bad}: {code}"
        );
    }
    assert_eq!(
        ok(call(&s, ADMIN, "GET", "/v1/keys", None))["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = call(&s, ADMIN, "DELETE", "/v1/keys/not-hex", None);
    assert_eq!(
        (r.status, r.error_code()),
        (400, "invalid_api_key_id".into())
    );
    // A scoped admin cannot manage keys or act on the node; its refusal is audited with its id.
    let r = call(
        &s,
        &token,
        "POST",
        "/v1/keys",
        Some(&json!({"role": "admin", "collections": ["*"], "keyspaces": ["*"]})),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = call(&s, &token, "POST", "/v1/snapshot", None);
    assert_eq!(r.status, 403);
    // It can create a collection in its scope, not outside.
    let schema = json!({"vectors": {"v": {"dim": 2, "metric": "l2"}}});
    assert_eq!(
        call(&s, &token, "PUT", "/v2/collections/team-a-x", Some(&schema)).status,
        201
    );
    assert_eq!(
        call(&s, &token, "PUT", "/v2/collections/other", Some(&schema)).status,
        403
    );
    // Request-rate quota: a burst of 2, then 429 with Retry-After.
    let (_, slow) = make_key(
        &s,
        json!({"role": "read", "keyspaces": ["default"], "quotas": {"requests_per_s": 2}}),
    );
    let mut limited = None;
    for _ in 0..20 {
        let r = call(&s, &slow, "GET", "/v1/get_fast/1", None);
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 404, "{}", r.text());
    }
    let r = limited.expect("429 within 20 requests at 2 per second");
    assert_eq!(r.error_code(), "rate_limited");
    assert!(r.header("retry-after").is_some());
    // The audit log: the key creation (ok, by the config key), the scoped admin's refusals
    // (denied, with its id), the collection it created; not the reads.
    // A flood of refusals without a known token is logged at most once a second (not fsynced
    // per request): unauthenticated traffic cannot become a stream of disk syncs.
    for _ in 0..50 {
        assert_eq!(
            call(&s, "not-a-key-at-all", "POST", "/v1/snapshot", None).status,
            401
        );
    }
    // So is a flood of refusals by a known key: at most once a second per key and route.
    for _ in 0..50 {
        assert_eq!(call(&s, &token, "POST", "/v1/snapshot", None).status, 403);
    }
    let log = ok(call(&s, ADMIN, "GET", "/v1/audit?limit=1000", None));
    let denied = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["route"] == json!("/v1/snapshot") && e["who"] == json!(id))
        .count();
    assert!((1..=4).contains(&denied), "{denied} denied entries: {log}");
    let anonymous = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["route"] == json!("/v1/snapshot") && e["who"].is_null())
        .count();
    assert!(
        (1..=3).contains(&anonymous),
        "{anonymous} anonymous entries: {log}"
    );
    let entries = log["entries"].as_array().unwrap();
    let find = |route: &str, who_prefix: &str, outcome: &str| {
        entries.iter().any(|e| {
            e["route"] == json!(route)
                && e["who"].as_str().unwrap_or("").starts_with(who_prefix)
                && e["outcome"] == json!(outcome)
                && e["at_ms"].as_i64().unwrap_or(0) > 0
        })
    };
    assert!(find("/v1/keys", "config:", "ok"), "{log}");
    assert!(find("/v1/keys", &id, "denied"), "{log}");
    assert!(find("/v1/snapshot", &id, "denied"), "{log}");
    assert!(find("/v2/collections/{name}", &id, "ok"), "{log}");
    assert!(find("/v2/collections/{name}", &id, "denied"), "{log}");
    assert!(
        !entries
            .iter()
            .any(|e| e["route"] == json!("/v1/get_fast/{key}")),
        "reads are not admin actions: {log}"
    );
    let r = call(&s, ADMIN, "GET", "/v1/audit?limit=0", None);
    assert_eq!((r.status, r.error_code()), (400, "invalid_query".into()));
    let r = call(&s, ADMIN, "GET", "/v1/audit?evil=1", None);
    assert_eq!(r.status, 400);
}

/// Without configured keys everyone may do everything: a scoped key would limit nobody, so none
/// can be made.
#[test]
fn keys_need_auth_to_be_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let r = s.post("/v1/keys", r#"{"role":"read","collections":["*"]}"#);
    assert_eq!((r.status, r.error_code()), (409, "auth_not_enabled".into()));
}
