//! `hubgrade history` and `hubgrade backups`: what the ledger recorded, including upgrades
//! whose HubUpgrade is gone. They read the ledger directly (`--ledger-url`, or the
//! operator's own $HUBGRADE_LEDGER_URL inside its pod: `kubectl exec deploy/hubgrade --
//! hubgrade history`), and change nothing.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::kubectl::columns;
use crate::ledger::{BackupEntry, Filter, Ledger, UpgradeEntry};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The ledger: `sqlite:///<path>` or `postgres://<user>@<host>/<database>`, its password in
    /// $HUBGRADE_LEDGER_PASSWORD.
    #[arg(long, env = "HUBGRADE_LEDGER_URL")]
    pub ledger_url: String,
    /// Only this namespace (default: every namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Only this hub Deployment.
    #[arg(long)]
    pub hub: Option<String>,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `hubgrade history`.
pub async fn history(args: LedgerArgs) -> ExitCode {
    read(&args, |ledger, filter| async move {
        let upgrades = ledger.history(&filter).await?;
        Ok(match args.output {
            Format::Table => history_table(&upgrades),
            format => render(format, &upgrades),
        })
    })
    .await
}

/// `hubgrade backups`.
pub async fn backups(args: LedgerArgs) -> ExitCode {
    read(&args, |ledger, filter| async move {
        let backups = ledger.backups(&filter).await?;
        Ok(match args.output {
            Format::Table => backups_table(&backups),
            format => render(format, &backups),
        })
    })
    .await
}

async fn read<F, Fut>(args: &LedgerArgs, work: F) -> ExitCode
where
    F: FnOnce(Ledger, Filter) -> Fut,
    Fut: std::future::Future<Output = Result<String, crate::ledger::LedgerError>>,
{
    let password = std::env::var("HUBGRADE_LEDGER_PASSWORD").ok();
    let ledger = match Ledger::open_to_read(&args.ledger_url, password.as_deref()).await {
        Ok(ledger) => ledger,
        Err(error) => {
            eprintln!("hubgrade: {error}");
            return ExitCode::FAILURE;
        }
    };
    let filter = Filter {
        namespace: args.namespace.clone(),
        hub: args.hub.clone(),
    };
    let result = work(ledger.clone(), filter).await;
    ledger.close().await;
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("hubgrade: {error}");
            ExitCode::FAILURE
        }
    }
}

fn render(format: Format, value: &impl Serialize) -> String {
    match format {
        Format::Yaml => serde_saphyr::to_string(value).unwrap_or_default(),
        _ => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
    }
}

/// NAMESPACE, HUB, NAME, PHASE, FROM, TO, DOWNTIME, BY, CREATED, DELETED.
fn history_table(upgrades: &[UpgradeEntry]) -> String {
    let header = [
        "NAMESPACE",
        "HUB",
        "NAME",
        "PHASE",
        "FROM",
        "TO",
        "DOWNTIME",
        "CREATED",
        "DELETED",
        "BY",
    ];
    let rows = upgrades.iter().map(|u| {
        vec![
            u.namespace.clone(),
            u.hub.clone(),
            u.name.clone(),
            if u.reason.is_empty() {
                u.phase.clone()
            } else {
                format!("{} ({})", u.phase, u.reason)
            },
            u.from_image.as_deref().map(tag).unwrap_or("-").to_string(),
            tag(&u.to_image).to_string(),
            match (u.downtime_seconds, u.predicted_downtime_seconds) {
                (Some(measured), Some(predicted)) => {
                    format!("{measured}s (predicted {predicted}s)")
                }
                (Some(measured), None) => format!("{measured}s"),
                (None, Some(predicted)) => format!("- (predicted {predicted}s)"),
                (None, None) => "-".into(),
            },
            u.created_at.clone(),
            u.deleted_at.clone().unwrap_or_else(|| "-".into()),
            u.created_by.clone(),
        ]
    });
    columns(&header, rows)
}

/// NAMESPACE, HUB, UPGRADE, KIND, SIZE, CREATED, STATE, LOCATION.
fn backups_table(backups: &[BackupEntry]) -> String {
    let header = [
        "NAMESPACE",
        "HUB",
        "UPGRADE",
        "KIND",
        "SIZE",
        "CREATED",
        "STATE",
        "LOCATION",
    ];
    let rows = backups.iter().map(|b| {
        vec![
            b.namespace.clone(),
            b.hub.clone(),
            b.upgrade.clone(),
            b.kind.clone(),
            b.size_bytes.map_or_else(|| "-".into(), size),
            b.created_at.clone(),
            match (&b.deleted_by, b.state.as_str()) {
                (Some(rule), "deleted") => format!("deleted ({rule})"),
                (_, state) => state.to_string(),
            },
            b.location.clone(),
        ]
    });
    columns(&header, rows)
}

/// An image's tag (or the whole reference when it has none): what a table has room for.
fn tag(image: &str) -> &str {
    image
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or(image, |(_, t)| t)
}

fn size(bytes: i64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_tags_sizes_and_why_a_backup_went() {
        assert_eq!(tag("quay.io/jupyterhub/k8s-hub:4.1.0"), "4.1.0");
        assert_eq!(tag("registry:5000/hub"), "registry:5000/hub");
        assert_eq!(size(4096), "4.0 KiB");
        let backup = BackupEntry {
            upgrade_uid: "u".into(),
            namespace: "jhub".into(),
            hub: "hub".into(),
            upgrade: "to-4".into(),
            kind: "File".into(),
            location: "/srv/jupyterhub/x".into(),
            size_bytes: Some(10),
            checksum: None,
            verified: true,
            created_at: "2026-11-26T10:00:00Z".into(),
            state: "deleted".into(),
            deleted_at: Some("2026-11-27T10:00:00Z".into()),
            deleted_by: Some("retain 3".into()),
        };
        let table = backups_table(&[backup]);
        assert!(table.contains("deleted (retain 3)"), "{table}");
        assert!(table.starts_with("NAMESPACE   HUB   UPGRADE"), "{table}");
    }
}
