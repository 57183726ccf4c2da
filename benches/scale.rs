//! probe (temporary)
#[path = "common/rss.rs"]
mod rss;
#[path = "common/tenant.rs"]
mod tenant;

use std::time::Instant;
use rampart::snapshot::{schema::SnapshotFile, locate::SourceMap, validate, catalog, CompiledSnapshot, SnapshotInfo};

fn main() {
    let n: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let shape = tenant::Shape::new(n);
    let t = Instant::now();
    let text = tenant::yaml(&shape);
    eprintln!("generate {:?} {} bytes rss {} KiB", t.elapsed(), text.len(), rss::rss_kib());
    if std::env::var("WRITE").is_ok() { std::fs::write("/tmp/scale/t.yaml", &text).unwrap(); std::fs::write("/tmp/scale/t.json", tenant::json(&shape)).unwrap(); return; }
    let t = Instant::now();
    let _: serde::de::IgnoredAny = serde_yaml::from_str(&text).unwrap();
    eprintln!("serde_yaml IgnoredAny {:?} rss {}", t.elapsed(), rss::rss_kib());
    let t = Instant::now();
    let file: SnapshotFile = serde_yaml::from_str(&text).unwrap();
    eprintln!("serde_yaml SnapshotFile {:?} rss {}", t.elapsed(), rss::rss_kib());
    let t = Instant::now();
    let map = SourceMap::build(&text);
    eprintln!("sourcemap {:?} rss {}", t.elapsed(), rss::rss_kib());
    let t = Instant::now();
    let builtin = catalog::builtin_roles().unwrap();
    let tenant = validate::tenant(file, &map, builtin, "x".into()).unwrap();
    eprintln!("validate {:?} rss {}", t.elapsed(), rss::rss_kib());
    drop(map);
    let t = Instant::now();
    let c = CompiledSnapshot::compile(tenant, SnapshotInfo{revision: "x".into(), source: "x".into(), content_sha256: "x".into(), loaded_at: std::time::SystemTime::now()});
    eprintln!("compile {:?} rss {}", t.elapsed(), rss::rss_kib());
    drop(text);
    eprintln!("steady rss {} nodes {}", rss::rss_kib(), c.nodes.len());
    let j = tenant::json(&shape);
    let t = Instant::now();
    let _: SnapshotFile = serde_json::from_str(&j).unwrap();
    eprintln!("serde_json SnapshotFile {:?}", t.elapsed());
}
