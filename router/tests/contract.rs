//! The interface check that tests outside this code base rely on
//! (`../shared/contract/check.py --ws`), run against a real router on a socket
//! with real local sandboxes and the fake model upstream.

mod common;

use std::{path::PathBuf, time::Duration};

use common::live::Live;
use sqlx::PgPool;

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_router_passes_the_shared_contract_check(db: PgPool) {
    let script = std::env::var_os("JARVIS_CONTRACT_CHECK")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/contract/check.py")
        });
    assert!(
        script.exists(),
        "contract check not found at {}",
        script.display()
    );

    let live = Live::start(db).await;
    let url = live.url.clone();

    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(&script)
            .arg(&url)
            .arg("--ws")
            .output(),
    )
    .await
    .expect("the check finishes within two minutes")
    .expect("python3 runs");
    let report = String::from_utf8_lossy(&out.stdout);
    drop(live);
    assert!(
        out.status.success(),
        "contract check failed:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(" 0 failed"), "{report}");
}
