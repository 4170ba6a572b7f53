//! Fuzzing of what hubgrade reads from people and from the cluster: database URLs, the spec
//! (with its durations and its plan), image references for the downgrade guard and revisions,
//! backup references. Every input must give an answer or a clear error, never a panic, and a
//! password never shows in what a URL prints.
//!
//! `make test` runs a short pass (2,000 inputs each); `make fuzz` runs 10^6 each
//! (`HUBGRADE_FUZZ_CASES`). A failure prints the smallest input that fails.

use hubgrade::api::{HubUpgradeSpec, parse_duration};
use hubgrade::db::backend::Backend;
use hubgrade::db::url::{DatabaseUrl, redact};
use hubgrade::hub::revision::{check_image_upgrade, check_upgrade, release_of_image};
use hubgrade::machine::BackupRecord;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("HUBGRADE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}

/// Text that looks like the thing and is often broken: the characters URLs, paths, durations
/// and image references are made of, and a few others.
fn text_of(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    proptest::collection::vec(proptest::sample::select(chars), 0..max)
        .prop_map(|c| c.into_iter().collect())
}

const URL_CHARS: &str = "abcdefgsqlitepostgresmysql+:/@?#&=%[]._-0123456789 \n\u{e9}";

#[test]
fn any_text_read_as_a_database_url_gives_a_url_or_an_error() {
    run(
        prop_oneof![
            any::<String>(),
            text_of(URL_CHARS, 80),
            text_of(URL_CHARS, 60).prop_map(|t| format!("postgresql://{t}")),
            text_of(URL_CHARS, 60).prop_map(|t| format!("mysql+pymysql://{t}")),
            text_of(URL_CHARS, 60).prop_map(|t| format!("sqlite:///{t}")),
        ],
        |text| {
            let _ = redact(&text);
            if let Ok(url) = DatabaseUrl::parse(&text) {
                let _ = (url.to_string(), format!("{url:?}"));
            }
            Ok(())
        },
    );
}

/// Whatever a password holds, neither its start nor its end shows in the URL's text, its
/// debug form, `redact`, or the error a refused URL gives.
#[test]
fn a_password_never_shows_whatever_it_holds() {
    let password = text_of("q@/?#:%&=+ !\"\\abc123\u{e9}", 24).prop_map(|p| format!("Zq9{p}Wk8"));
    let rest = prop_oneof![
        Just("db.example.org:5432/jupyterhub".to_string()),
        Just("db/jupyterhub?sslmode=require".to_string()),
        Just("[::1]:3306/hub".to_string()),
        Just("db".to_string()),
        text_of(URL_CHARS, 20),
    ];
    let scheme = prop_oneof![Just("postgresql"), Just("mysql+pymysql"), Just("oracle")];
    run((scheme, password, rest), |(scheme, password, rest)| {
        let text = format!("{scheme}://hub:{password}@{rest}");
        let mut shown = vec![redact(&text)];
        match DatabaseUrl::parse(&text) {
            Ok(url) => shown.extend([url.to_string(), format!("{url:?}")]),
            Err(error) => shown.push(error.to_string()),
        }
        // The password starts and ends with a marker nothing else holds: a shown start or end
        // is a shown part.
        for text in shown {
            prop_assert!(
                !text.contains("Zq9") && !text.contains("Wk8"),
                "{text} shows part of the password {password:?}"
            );
        }
        Ok(())
    });
}

#[test]
fn any_spec_is_planned_or_refused() {
    let duration = prop_oneof![
        text_of("0123456789.hms -", 12),
        Just("30m".to_string()),
        Just("1h30m".to_string()),
        any::<String>(),
    ];
    let spec = (
        duration.clone(),
        duration.clone(),
        duration,
        any::<bool>(),
        text_of(URL_CHARS, 30),
        prop_oneof![
            Just("Auto"),
            Just("File"),
            Just("Clone"),
            Just("Dump"),
            Just("VolumeSnapshot"),
            Just("x")
        ],
        prop_oneof![Just("Auto"), Just("Operator"), Just("External"), Just("")],
        any::<u32>(),
    );
    run(
        spec,
        |(timeout, rollback, drain, rehearse, not_before, method, images, servers)| {
            let _ = parse_duration(&timeout);
            let json = serde_json::json!({
                "hub": {"deployment": "hub"},
                "targetImage": "quay.io/jupyterhub/k8s-hub:4.2.0",
                "backup": {"method": method},
                "migration": {"rehearse": rehearse, "timeout": timeout},
                "rollout": {"imageManagement": images},
                "rollback": {"timeout": rollback},
                "drain": {"timeout": drain, "tokenSecret": {"name": "hub", "key": not_before}, "maxActiveServers": servers},
            });
            if let Ok(spec) = serde_json::from_value::<HubUpgradeSpec>(json) {
                let _ = spec.plan();
            }
            Ok(())
        },
    );
}

#[test]
fn any_pair_of_images_or_revisions_is_judged_without_panic() {
    let image = prop_oneof![
        text_of("quay.io/jupyterhub/k8s-hub:0123456789.-abrc@sha256", 60),
        any::<String>(),
        (0u32..8, 0u32..20, 0u32..20)
            .prop_map(|(a, b, c)| format!("quay.io/jupyterhub/k8s-hub:{a}.{b}.{c}")),
    ];
    let revision = prop_oneof![text_of("0123456789abcdef", 14), any::<String>()];
    run(
        (
            image.clone(),
            image,
            revision.clone(),
            revision,
            any::<bool>(),
        ),
        |(current, target, from, to, allow)| {
            let _ = release_of_image(&current);
            if let Err(error) = check_image_upgrade(&current, &target) {
                let _ = error.to_string();
            }
            let _ = check_upgrade(&from, &to, allow);
            Ok(())
        },
    );
}

#[test]
fn any_backup_reference_is_read_or_refused() {
    let reference = prop_oneof![
        any::<String>(),
        (
            prop_oneof![
                Just("File"),
                Just("Clone"),
                Just("Dump"),
                Just("VolumeSnapshot"),
                Just("?")
            ],
            text_of(URL_CHARS, 40),
            any::<Option<u64>>(),
            any::<bool>()
        )
            .prop_map(|(method, reference, size, verified)| {
                serde_json::json!({"method": method, "reference": reference,
                                   "sizeBytes": size, "verified": verified})
                .to_string()
            }),
    ];
    let url = prop_oneof![
        Just("sqlite:////srv/jupyterhub/jupyterhub.sqlite"),
        Just("postgresql://hub:pw@db/jupyterhub"),
        Just("mysql://hub:pw@db/jupyterhub"),
    ];
    run((reference, url), |(text, url)| {
        if let Ok(record) = serde_json::from_str::<BackupRecord>(&text) {
            let url = DatabaseUrl::parse(url).expect("a valid URL");
            if let Err(error) = Backend::for_reference(&url, &record) {
                let _ = error.to_string();
            }
        }
        Ok(())
    });
}
