//! `docs/api.md`, the API reference, is generated from the served `/openapi.json` (auth off,
//! default limits) and must match it. `KYRODB_UPDATE_DOCS=1 cargo test -p kyrodb --test
//! api_reference` rewrites it.

mod common;

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde_json::Value;

fn type_of(s: &Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(all) = s["oneOf"].as_array().or(s["anyOf"].as_array()) {
        return all.iter().map(type_of).collect::<Vec<_>>().join(" or ");
    }
    let t = match &s["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    };
    if t.starts_with("array") {
        return format!("array of {}", type_of(&s["items"]));
    }
    let mut extra = Vec::new();
    if let Some(f) = s["format"].as_str() {
        extra.push(f.to_owned());
    }
    for (k, label) in [("minimum", "≥"), ("maximum", "≤")] {
        if let Some(n) = s[k].as_f64() {
            if n.abs() < 1e15 {
                extra.push(format!("{label} {n}"));
            }
        }
    }
    if let Some(p) = s["pattern"].as_str() {
        extra.push(format!("`{p}`"));
    }
    if extra.is_empty() {
        t
    } else {
        format!("{t} ({})", extra.join(", "))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The Markdown reference of an OpenAPI document.
fn render(doc: &Value) -> String {
    let mut out = String::new();
    let info = &doc["info"];
    writeln!(out, "# KyroDB HTTP API reference\n").unwrap();
    writeln!(
        out,
        "Generated from the server's `/openapi.json` (version {}, auth off, default limits) by \
         `crates/cli/tests/api_reference.rs`; do not edit — `KYRODB_UPDATE_DOCS=1 cargo test -p kyrodb \
         --test api_reference` rewrites it. {}\n",
        info["version"].as_str().unwrap_or("?"),
        one_line(info["description"].as_str().unwrap_or(""))
    )
    .unwrap();
    writeln!(
        out,
        "Every error is `{{\"error\": {{\"code\": \"…\", \"message\": \"…\"}}}}` \
         ([ErrorBody](#errorbody)); the Python SDK raises one exception class per code.\n"
    )
    .unwrap();
    let mut by_tag: BTreeMap<String, Vec<(String, String, &Value)>> = BTreeMap::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
            by_tag
                .entry(tag)
                .or_default()
                .push((path.clone(), method.to_uppercase(), op));
        }
    }
    writeln!(out, "## Routes\n").unwrap();
    for (tag, ops) in &by_tag {
        writeln!(
            out,
            "- **{tag}**: {}",
            ops.iter()
                .map(|(p, m, _)| format!("[`{m} {p}`](#{})", anchor(m, p)))
                .collect::<Vec<_>>()
                .join(", ")
        )
        .unwrap();
    }
    for (tag, ops) in &by_tag {
        writeln!(out, "\n## {tag}").unwrap();
        for (path, method, op) in ops {
            writeln!(out, "\n### `{method} {path}`\n").unwrap();
            for k in ["summary", "description"] {
                if let Some(t) = op[k].as_str() {
                    writeln!(out, "{}\n", t.trim()).unwrap();
                }
            }
            if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                writeln!(
                    out,
                    "| parameter | in | type | required | description |\n|---|---|---|---|---|"
                )
                .unwrap();
                for p in params {
                    writeln!(
                        out,
                        "| `{}` | {} | {} | {} | {} |",
                        p["name"].as_str().unwrap_or(""),
                        p["in"].as_str().unwrap_or(""),
                        type_of(&p["schema"]),
                        if p["required"].as_bool().unwrap_or(false) {
                            "yes"
                        } else {
                            "no"
                        },
                        one_line(p["description"].as_str().unwrap_or(""))
                    )
                    .unwrap();
                }
                out.push('\n');
            }
            if let Some(content) = op["requestBody"]["content"].as_object() {
                for (ct, c) in content {
                    writeln!(out, "Body (`{ct}`): {}\n", type_of(&c["schema"])).unwrap();
                }
            }
            writeln!(out, "| status | body | meaning |\n|---|---|---|").unwrap();
            for (status, r) in op["responses"].as_object().unwrap() {
                let body = r["content"]
                    .as_object()
                    .map(|c| {
                        c.iter()
                            .map(|(ct, v)| format!("`{ct}` {}", type_of(&v["schema"])))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                writeln!(
                    out,
                    "| {status} | {body} | {} |",
                    one_line(r["description"].as_str().unwrap_or(""))
                )
                .unwrap();
            }
        }
    }
    writeln!(
        out,
        "\n## Error codes\n\nEvery error answer is `{{\"error\": {{\"code\", \"message\"}}}}`; the codes \
         (stable; the SDK raises one exception class per code):\n\n| code | status | meaning |\n|---|---|---|"
    )
    .unwrap();
    for c in doc["x-error-codes"].as_array().unwrap() {
        writeln!(
            out,
            "| `{}` | {} | {} |",
            c["code"].as_str().unwrap(),
            c["status"],
            one_line(c["meaning"].as_str().unwrap())
        )
        .unwrap();
    }
    writeln!(out, "\n## Schemas").unwrap();
    for (name, s) in doc["components"]["schemas"].as_object().unwrap() {
        writeln!(out, "\n### {name}\n").unwrap();
        if let Some(d) = s["description"].as_str() {
            writeln!(out, "{}\n", d.trim()).unwrap();
        }
        let required: Vec<&str> = s["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = s["properties"].as_object() {
            writeln!(
                out,
                "| field | type | required | description |\n|---|---|---|---|"
            )
            .unwrap();
            for (p, ps) in props {
                writeln!(
                    out,
                    "| `{p}` | {} | {} | {} |",
                    type_of(ps),
                    if required.contains(&p.as_str()) {
                        "yes"
                    } else {
                        "no"
                    },
                    one_line(ps["description"].as_str().unwrap_or(""))
                )
                .unwrap();
            }
        } else {
            writeln!(out, "Type: {}", type_of(s)).unwrap();
        }
    }
    out
}

fn anchor(method: &str, path: &str) -> String {
    format!("{method} {path}")
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_api_reference_is_generated_from_the_served_document() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::Server::start(&dir.path().join("data"), &[]);
    let doc = s.get("/openapi.json").json();
    let want = render(&doc);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md");
    if std::env::var_os("KYRODB_UPDATE_DOCS").is_some() {
        std::fs::write(&file, &want).unwrap();
    }
    let have = std::fs::read_to_string(&file).unwrap_or_default();
    // Every route of the document is in the reference.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            assert!(
                have.contains(&format!("### `{} {path}`", m.to_uppercase())),
                "docs/api.md lacks {m} {path}"
            );
        }
    }
    assert!(
        have == want,
        "docs/api.md is stale: run KYRODB_UPDATE_DOCS=1 cargo test -p kyrodb --test api_reference"
    );
}

/// The Python SDK's exception classes (one per error code) and the names its package exports are
/// generated from the served document's `x-error-codes` by `clients/python/tools/gen_errors.py`,
/// and its typed bodies (`kyrodb.wire`) from the document's schemas by `tools/gen_models.py`
/// (standard library only); this fails when either is stale.
#[test]
fn the_sdk_error_classes_and_typed_bodies_are_generated_from_the_served_document() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::Server::start(&dir.path().join("data"), &[]);
    let doc = s.get("/openapi.json").json();
    assert!(
        doc["x-error-codes"].as_array().is_some_and(|c| c
            .iter()
            .all(|c| c["code"].is_string() && c["status"].is_u64() && c["meaning"].is_string())),
        "x-error-codes: {}",
        doc["x-error-codes"]
    );
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, doc.to_string()).unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python");
    let update = std::env::var_os("KYRODB_UPDATE_DOCS").is_some();
    // The error classes (gen_errors.py), and the typed request and answer bodies, one TypedDict per
    // named schema (gen_models.py: `kyrodb.wire`).
    for tool in ["tools/gen_errors.py", "tools/gen_models.py"] {
        let out = std::process::Command::new("python3")
            .current_dir(&sdk)
            .arg(tool)
            .arg(&spec)
            .args((!update).then_some("--check"))
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{tool}: {}{}\n(regenerate: KYRODB_UPDATE_DOCS=1 cargo test -p kyrodb --test api_reference)",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
