//! Embeddings over HTTP with the real binary: `kyrodb model install`, `/v2/embed`, `/v2/models`,
//! `auto_embed` in `/build_info` and `/ready`, and a server without a model saying how to get one.

mod common;

use common::{command, installed_model_dir, Server};
use serde_json::{json, Value};

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cosine(a: &Value, b: &Value) -> f64 {
    let (a, b) = (floats(a), floats(b));
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() / (norm(&a) * norm(&b))
}

#[test]
fn with_the_model_installed_the_server_embeds_and_refuses_bad_requests() {
    let models = installed_model_dir();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_MODEL_DIR", models.to_str().unwrap())],
    );
    let info = s.get("/build_info").json();
    assert_eq!(info["auto_embed"], "available", "{info}");
    assert_eq!(info["embed_model"]["dim"], 384);
    assert_eq!(s.get("/ready").json()["auto_embed"], "available");

    let r = s.post(
        "/v2/embed",
        &json!({"texts": ["A man is eating food.", "A man is eating a piece of bread.", "", "The new movie is awesome."]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["model"], "all-MiniLM-L6-v2");
    let vs = v["vectors"].as_array().unwrap();
    assert_eq!(vs.len(), 4);
    assert!(vs.iter().all(|x| x.as_array().unwrap().len() == 384));
    let c = cosine(&vs[0], &vs[1]);
    assert!((c - 0.7553).abs() < 0.002, "documented pair {c}");
    assert!(cosine(&vs[0], &vs[3]) < 0.3);

    for (body, code) in [
        (json!({"texts": []}).to_string(), "invalid_request"),
        (json!({"texts": vec!["x"; 257]}).to_string(), "too_many"),
        (
            json!({"texts": ["a".repeat((1 << 20) + 1)]}).to_string(),
            "too_large",
        ),
        (json!({"texts": [1, 2]}).to_string(), ""),
        (json!({"texts": "one"}).to_string(), ""),
        (json!({"text": ["a"]}).to_string(), ""),
        ("[1,".to_owned(), ""),
    ] {
        let r = s.post("/v2/embed", &body);
        assert_eq!(
            r.status,
            400,
            "{} -> {}",
            &body[..body.len().min(60)],
            r.text()
        );
        if !code.is_empty() {
            assert_eq!(r.error_code(), code, "{}", r.text());
        }
    }

    let m = s.get("/v2/models").json();
    let model = &m["models"][0];
    assert_eq!(model["name"], "all-MiniLM-L6-v2");
    assert_eq!(model["loaded"], true);
    assert_eq!(model["dim"], 384);
    assert_eq!(model["sha256"].as_str().unwrap().len(), 64);
    let metrics = s.get("/metrics").text();
    assert!(
        metrics.contains("kyrodb_embed_texts_total"),
        "embedding metrics missing"
    );
}

#[test]
fn without_a_model_the_server_runs_and_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-models");
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_MODEL_DIR", empty.to_str().unwrap())],
    );
    let ready = s.get("/ready");
    assert_eq!(ready.status, 200, "readiness does not depend on the model");
    assert_eq!(ready.json()["auto_embed"], "unavailable");
    let info = s.get("/build_info").json();
    assert_eq!(info["auto_embed"], "unavailable");
    assert!(
        info["auto_embed_reason"]
            .as_str()
            .unwrap()
            .contains("model.safetensors"),
        "{info}"
    );
    let r = s.post("/v2/embed", &json!({"texts": ["hello"]}).to_string());
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "model_unavailable");
    assert!(r.text().contains("kyrodb model install"), "{}", r.text());
    assert_eq!(s.get("/v2/models").json()["models"][0]["installed"], false);
}

/// `kyrodb model install --from SRC --model-dir DEST`.
fn install_from(src: &std::path::Path, dest: &std::path::Path) -> std::process::Output {
    command()
        .args(["model", "install", "--from"])
        .arg(src)
        .arg("--model-dir")
        .arg(dest)
        .output()
        .unwrap()
}

#[test]
fn model_install_from_a_folder_verifies_and_refuses_a_corrupt_copy() {
    let models = installed_model_dir();
    let src = models.join("all-MiniLM-L6-v2");
    let tmp = tempfile::tempdir().unwrap();
    // A good copy (hard links: no 90 MB copy).
    let good = tmp.path().join("good");
    std::fs::create_dir(&good).unwrap();
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        std::fs::hard_link(src.join(f), good.join(f)).unwrap();
    }
    let dest = tmp.path().join("models");
    let out = install_from(&good, &dest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed all-MiniLM-L6-v2"));
    // Again: already there, nothing done.
    let out = install_from(&good, &dest);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already installed"));
    // A corrupt source: refused with the file named, the target left without a model.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::hard_link(src.join("model.safetensors"), bad.join("model.safetensors")).unwrap();
    std::fs::hard_link(src.join("tokenizer.json"), bad.join("tokenizer.json")).unwrap();
    let mut cfg = std::fs::read(src.join("config.json")).unwrap();
    cfg[5] ^= 0x01;
    std::fs::write(bad.join("config.json"), cfg).unwrap();
    let dest2 = tmp.path().join("models2");
    let out = install_from(&bad, &dest2);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.json") && err.contains("sha256"),
        "{err}"
    );
    assert!(
        !dest2.join("all-MiniLM-L6-v2").exists(),
        "a refused install left files behind"
    );
    let list = command()
        .args(["model", "list", "--model-dir"])
        .arg(&dest2)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("not installed"));
}

fn embedded_schema() -> String {
    json!({
        "vectors": {
            "text": {"dim": 384, "metric": "cosine", "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}},
            "raw": {"dim": 4, "metric": "l2"}
        },
        "text_fields": ["title", "body"],
        "fields": {"lang": "keyword"}
    })
    .to_string()
}

fn put(s: &Server, path: &str, body: &str) -> common::Resp {
    s.req(
        "PUT",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

#[test]
fn auto_embed_documents_are_searchable_by_text_at_once_and_governed() {
    let models = installed_model_dir();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_MODEL_DIR", models.to_str().unwrap())],
    );
    let r = put(&s, "/v2/collections/notes", &embedded_schema());
    assert_eq!(r.status, 201, "{}", r.text());
    let info = s.get("/v2/collections/notes").json();
    let e = &info["schema"]["vectors"]["text"]["embed"];
    assert_eq!(
        e["sha256"].as_str().unwrap().len(),
        64,
        "governance records the model: {info}"
    );
    assert!(e["version"].is_string());
    // The same schema again (without the recorded fields) is the same collection.
    assert_eq!(
        put(&s, "/v2/collections/notes", &embedded_schema()).status,
        200
    );

    let docs = json!({"documents": [
        {"id": "eat", "text": {"title": "t", "body": "A man is eating food."}, "auto_embed": true},
        {"id": "movie", "text": {"body": "The new movie is awesome."}, "fields": {"lang": "en"}},
        {"id": "drums", "text": {"body": "A monkey is playing drums."}, "vectors": {"raw": [1, 2, 3, 4]}},
        {"id": "notext", "text": {"title": "only a title"}}
    ]});
    let r = s.post("/v2/collections/notes/documents", &docs.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    // Searchable the moment the write is acknowledged, by text.
    let q = |s: &Server, text: &str| {
        let r = s.post(
            "/v2/collections/notes/search",
            &json!({"text": text, "using": "text", "limit": 3}).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(q(&s, "A man is eating a piece of bread.")[0], "eat");
    assert_eq!(q(&s, "a great film")[0], "movie");
    assert!(
        !q(&s, "anything").contains(&"notext".to_owned()),
        "no text, no vector"
    );
    // The query-string form: other parameters are equality filters on fields.
    let ids = |r: common::Resp| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(s.get("/v2/search?collection=notes&similar_to=a%20great%20film&limit=2"))[0],
        "movie"
    );
    assert_eq!(
        ids(s.get("/v2/search?collection=notes&similar_to=food&lang=en")),
        vec!["movie"]
    );
    for bad in [
        "/v2/search?collection=notes&similar_to=x&nope=1",
        "/v2/search?similar_to=x",
        "/v2/search?collection=notes",
        "/v2/search?collection=notes&similar_to=x&limit=many",
        "/v2/search?collection=notes&similar_to=x&similar_to=y",
    ] {
        assert_eq!(s.get(bad).status, 400, "{bad}");
    }
    assert_eq!(s.get("/v2/search?collection=nope&similar_to=x").status, 404);
    let d = s.get("/v2/collections/notes/documents/eat").json();
    assert_eq!(d["vectors"]["text"].as_array().unwrap().len(), 384);

    // Refusals, each writing nothing.
    for (doc, code) in [
        (
            json!({"id": "x", "text": {"body": "b"}, "vectors": {"text": vec![0.1; 384]}, "vector_models": {"text": "other-model"}}),
            "model_mismatch",
        ),
        (
            json!({"id": "x", "text": {"body": "b"}, "vectors": {"text": vec![0.1; 384]}, "auto_embed": true}),
            "invalid_document",
        ),
        (json!({"id": "x", "auto_embed": "yes"}), "invalid_document"),
        (
            json!({"id": "x", "vector_models": {"nope": "m"}}),
            "unknown_field",
        ),
    ] {
        let r = s.post(
            "/v2/collections/notes/documents",
            &json!({"documents": [doc]}).to_string(),
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, code),
            "{}",
            r.text()
        );
    }
    let r = s.post(
        "/v2/collections/notes/search",
        &json!({"text": "x", "using": "raw"}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    for schema in [
        json!({"vectors": {"v": {"dim": 384, "metric": "cosine", "embed": {"model": "gpt-9", "source": "b"}}}, "text_fields": ["b"]}),
        json!({"vectors": {"v": {"dim": 512, "metric": "cosine", "embed": {"model": "all-MiniLM-L6-v2", "source": "b"}}}, "text_fields": ["b"]}),
        json!({"vectors": {"v": {"dim": 384, "metric": "cosine", "embed": {"model": "all-MiniLM-L6-v2", "source": "nope"}}}, "text_fields": ["b"]}),
        json!({"vectors": {"v": {"dim": 384, "metric": "cosine", "embed": {"model": "all-MiniLM-L6-v2", "source": "b", "sha256": "00"}}}, "text_fields": ["b"]}),
    ] {
        let r = put(&s, "/v2/collections/bad", &schema.to_string());
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_schema"),
            "{schema} -> {}",
            r.text()
        );
    }
    assert_eq!(s.get("/v2/collections/notes").json()["documents"], 4);
    let models_info = s.get("/v2/models").json();
    assert_eq!(
        models_info["models"][0]["used_by"][0]["collection"], "notes",
        "{models_info}"
    );

    // After kill -9 the stored vectors are used as they are (nothing is re-embedded at recovery):
    // without the model, text search is refused but vector search finds the document.
    let v = d["vectors"]["text"].clone();
    s.kill9();
    let none = dir.path().join("none").to_str().unwrap().to_owned();
    s.env.retain(|(k, _)| k != "KYRODB_MODEL_DIR");
    s.env.push(("KYRODB_MODEL_DIR".into(), none));
    s.restart();
    let r = s.post(
        "/v2/collections/notes/search",
        &json!({"vector": v, "using": "text", "limit": 1}).to_string(),
    );
    assert_eq!(r.json()["hits"][0]["id"], "eat", "{}", r.text());
    let r = s.post(
        "/v2/collections/notes/search",
        &json!({"text": "food", "using": "text"}).to_string(),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "model_unavailable")
    );
    let r = s.post(
        "/v2/collections/notes/documents",
        &json!({"documents": [{"id": "new", "text": {"body": "b"}}]}).to_string(),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "model_unavailable"),
        "{}",
        r.text()
    );
    assert_eq!(
        s.get("/v2/collections/notes").json()["documents"],
        4,
        "a refused write wrote something"
    );
}

/// Polls the collection's info until `pred` holds on its `reembed` record (bounded).
fn wait_job(s: &Server, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let info = s.get(&format!("/v2/collections/{name}")).json();
        if pred(&info["reembed"]) {
            return info["reembed"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {}",
            info["reembed"]
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

#[test]
fn a_reembed_job_switches_the_model_and_survives_kill_9_and_a_missing_model() {
    let models = installed_model_dir();
    let dir = tempfile::tempdir().unwrap();
    let model_env = (
        "KYRODB_MODEL_DIR".to_owned(),
        models.to_str().unwrap().to_owned(),
    );
    // Paced so that the kill below lands mid-job: 5 pages of 32 at 40 documents/s.
    let mut s = Server::start(
        &dir.path().join("data"),
        &[
            ("KYRODB_MODEL_DIR", models.to_str().unwrap()),
            ("KYRODB_REEMBED_DOCS_PER_S", "40"),
        ],
    );
    let schema = json!({"vectors": {"v": {"dim": 384, "metric": "cosine"}, "small": {"dim": 4, "metric": "l2"}},
                        "text_fields": ["body"], "fields": {"n": "integer"}});
    assert_eq!(
        put(&s, "/v2/collections/re", &schema.to_string()).status,
        201
    );
    let n = 160;
    let mut unit = vec![0.0; 384];
    unit[0] = 1.0;
    let docs: Vec<Value> = (0..n)
        .map(|i| {
            let mut d = json!({"id": format!("d{i}"), "vectors": {"v": unit}, "fields": {"n": i}});
            if i % 16 != 5 {
                d["text"] = json!({"body": format!("note {i}: {}", ["rivers flood in spring", "a recipe for bread", "the election results", "how to tune a guitar"][i % 4])});
            }
            d
        })
        .collect();
    let r = s.post(
        "/v2/collections/re/documents",
        &json!({ "documents": docs }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Refusals first: each writes nothing and starts no job.
    for (path, body, status, code) in [
        (
            "/v2/collections/nope/reembed",
            json!({"field": "v", "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}),
            404,
            "collection_not_found",
        ),
        (
            "/v2/collections/re/reembed",
            json!({"field": "v"}),
            400,
            "invalid_request",
        ),
        (
            "/v2/collections/re/reembed",
            json!({"embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}),
            400,
            "invalid_request",
        ),
        (
            "/v2/collections/re/reembed",
            json!({"field": "zzz", "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}),
            400,
            "unknown_field",
        ),
        (
            "/v2/collections/re/reembed",
            json!({"field": "small", "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}),
            400,
            "invalid_schema",
        ),
        (
            "/v2/collections/re/reembed",
            json!({"field": "v", "embed": {"model": "gpt-9", "source": "body"}}),
            400,
            "invalid_schema",
        ),
        (
            "/v2/collections/re/reembed",
            json!({"field": "v", "embed": {"model": "all-MiniLM-L6-v2", "source": "n"}}),
            400,
            "invalid_schema",
        ),
        (
            "/v2/collections/re/reembed",
            json!({"field": "v", "embed": {"model": "all-MiniLM-L6-v2"}}),
            400,
            "",
        ),
        (
            "/v2/collections/re/reembed",
            json!({"field": "v", "extra": 1}),
            400,
            "",
        ),
    ] {
        let r = s.post(path, &body.to_string());
        assert_eq!(r.status, status, "{body} -> {}", r.text());
        if !code.is_empty() {
            assert_eq!(r.error_code(), code, "{body} -> {}", r.text());
        }
    }
    let info = s.get("/v2/collections/re").json();
    assert!(info["reembed"].is_null(), "{info}");
    assert!(info["schema"]["vectors"]["v"]["embed"].is_null());

    let start = json!({"field": "v", "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}});
    let r = s.post("/v2/collections/re/reembed", &start.to_string());
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["total"], n);
    let r = s.post("/v2/collections/re/reembed", &start.to_string());
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "reembed_running"),
        "{}",
        r.text()
    );
    // The switch is immediate and governed: the field records the model.
    let info = s.get("/v2/collections/re").json();
    assert_eq!(
        info["schema"]["vectors"]["v"]["embed"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // kill -9 after the first page is durable.
    let before = wait_job(&s, "re", "first page", |j| j["done"].as_u64() >= Some(32));
    assert_eq!(before["state"], "running", "{before}");
    s.kill9();

    // Restarted without the model: the job waits and says why; nothing is lost.
    s.env.retain(|(k, _)| k != "KYRODB_MODEL_DIR");
    s.env.push((
        "KYRODB_MODEL_DIR".into(),
        dir.path().join("none").to_str().unwrap().into(),
    ));
    s.restart();
    let paused = s.get("/v2/collections/re").json()["reembed"].clone();
    assert_eq!(paused["state"], "paused", "{paused}");
    assert!(
        paused["paused"]
            .as_str()
            .unwrap()
            .contains("kyrodb model install"),
        "{paused}"
    );
    let done_at_kill = paused["done"].as_u64().unwrap();
    assert!((32..n as u64).contains(&done_at_kill), "{paused}");
    s.term();

    // With the model again (unpaced): resumes after its cursor and finishes.
    s.env
        .retain(|(k, _)| k != "KYRODB_MODEL_DIR" && k != "KYRODB_REEMBED_DOCS_PER_S");
    s.env.push(model_env);
    s.restart();
    let job = wait_job(&s, "re", "job done", |j| j["state"] == "done");
    assert_eq!(job["done"], n, "{job}");
    assert_eq!(job["resumed"], 1, "{job}");
    assert_eq!(job["cleared"], 10, "{job}");
    assert_eq!(job["progress"], 1.0);

    // Every document holds its own text's vector (as /v2/embed makes it); no text, no vector.
    for i in 0..n {
        let d = s.get(&format!("/v2/collections/re/documents/d{i}")).json();
        match d["text"]["body"].as_str() {
            Some(body) => {
                let e = s
                    .post("/v2/embed", &json!({"texts": [body]}).to_string())
                    .json();
                let c = cosine(&d["vectors"]["v"], &e["vectors"][0]);
                assert!(c > 0.9999, "d{i}: cosine {c}");
            }
            None => assert!(d["vectors"]["v"].is_null(), "d{i}: {d}"),
        }
    }
    let r = s.post(
        "/v2/collections/re/search",
        &json!({"text": "baking bread at home", "using": "v", "limit": 5}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for h in r.json()["hits"].as_array().unwrap() {
        let i: usize = h["id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(i % 4, 1, "bread notes first: {h}");
    }

    // The CLI: the same model again (the field's current spec), followed to the end.
    let out = common::run(
        &s,
        &["collection", "reembed", "re", "--field", "v", "--wait"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{n}/{n} documents (100%), done")),
        "{err}"
    );
    let out = common::run(&s, &["collection", "reembed", "re", "--field", "small"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_request"));
}
