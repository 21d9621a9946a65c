//! Flags every run depends on: durations and `--log-format`.

use sandbox::OpenBao;

use crate::support::{client, env};

#[test]
fn an_overflowing_or_zero_duration_is_a_usage_error_naming_the_flag() {
    for (flag, value, reason) in [
        ("--refresh-interval", "5000000000000h", "too large"),
        ("--retry-interval", "18446744073709551615s", "too large"),
        ("--timeout", "0s", "longer than zero"),
        ("--refresh-interval", "5 fortnights", "unknown time unit"),
    ] {
        let out = client()
            .args(["run", "--vault-addr", "http://127.0.0.1:1"])
            .args(["--auth-path", "asm-c1/hsm", "--secret-path", "asm-c1/hsm"])
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(value) && stderr.contains(reason),
            "{flag} {value}: {stderr}"
        );
    }
}

#[test]
fn durations_accept_humantime_forms() {
    let out = client()
        .args(["health", "--vault-addr", "http://127.0.0.1:1"])
        .args(["--timeout", "1s 500ms", "--retries", "1"])
        .output()
        .unwrap();
    // Parsed, then the (unreachable) server is reported as unavailable.
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every stderr line is one JSON object; returns them.
fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(stderr);
    assert!(!text.trim().is_empty(), "nothing logged");
    text.lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| panic!("not a JSON object: {line:?}\n{text}"))
        })
        .collect()
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_including_the_final_error() {
    let env = env(OpenBao::dev().await).await;
    let jwt = env.jwt("istio-system", "istiod-service-account").await;
    let ok = env
        .run(&jwt)
        .args(["--once", "--log-format", "json"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    let events = json_lines(&ok.stderr);
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"logged in to Vault"), "{events:?}");
    assert!(events.iter().all(|e| e["level"].is_string()), "{events:?}");
    assert!(!String::from_utf8_lossy(&ok.stderr).contains(&env.pin));

    // A refused login ends the process with an error, logged as JSON too.
    let refused = env.jwt("istio-system", "default").await;
    let out = env
        .run(&refused)
        .args(["--once", "--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let events = json_lines(&out.stderr);
    let last = events.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    let error = last["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("service account name not authorized"),
        "{last}"
    );

    // The default stays text.
    let jwt = env.jwt("istio-system", "istiod-service-account").await;
    let text = env.run(&jwt).arg("--once").output().unwrap();
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(stderr.contains("logged in to Vault"), "{stderr}");
    assert!(!stderr.trim_start().starts_with('{'), "{stderr}");
}
