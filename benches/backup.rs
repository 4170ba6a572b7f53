//! Benchmarks of hubgrade's database backups against the plain tools. `make bench` runs them and
//! writes docs/BENCHMARKS.md.
//!
//! SQLite, on a ~1 GiB database file:
//! - the backup inside the downtime (`back_up_for` with `SpacePlan::BackupBeforeMigration`
//!   after the rehearsal's copy: copy under SQLite's write lock with its BLAKE3 checksum in
//!   the same pass, read back and compared, fsync; the integrity check was the rehearsal's)
//!   against `cp`, and against `cp` followed by an fsync of the copy; the goal is at most 1.5×
//!   `cp`;
//! - the same backup seeded by the rehearsal: the seed the rehearsal left brought up to date
//!   in place after the running hub changed [`CHANGED_ROWS`] rows, writing only the pages that
//!   differ, read back and compared all the same;
//! - the rehearsal's copy (the same, plus `PRAGMA integrity_check` on the copy, plus the seed
//!   it leaves), as every backup was made before;
//! - the integrity check, BLAKE3 and SHA-256 alone, to show where the time goes, and `PRAGMA
//!   quick_check`, the lighter check `back_up` could run instead.
//!
//! PostgreSQL, on a ~1 GiB database of a private server started for the run:
//! - `backup::postgres::clone_database` (CREATE DATABASE ... TEMPLATE, then the copy compared
//!   with the original) against hubgrade's `dump` + `restore_dump` and against raw
//!   `pg_dump -Fc` + `pg_restore`;
//! - the bare `CREATE DATABASE ... TEMPLATE`, with PostgreSQL's default strategy (WAL_LOG, the
//!   statement `clone_database` issues) and with STRATEGY FILE_COPY, and `pg_dump -Fc -Z0`, to
//!   show what the checks and the dump's compression cost.
//!
//! The machine is small and shared, so absolute times are noise: every measurement runs several
//! times, interleaved with the others (A, B, C, A, B, C, ...), and the report compares medians.
//!
//! `cargo test --all-targets` builds and runs this target too: it measures only when
//! `cargo bench` runs it, which passes `--bench`.

use std::error::Error;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hubgrade::db::file::{size_and_checksum, size_and_checksum_like};
use hubgrade::db::postgres::{clone_database, dump, restore_dump};
use hubgrade::db::sqlite::{SpacePlan, back_up_for};
use hubgrade::db::url::DatabaseUrl;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection};

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// A PostgreSQL round takes about 90 s on a 2-core machine: five rounds of each keep
/// `make bench` under 10 minutes.
const SQLITE_ROUNDS: usize = 5;
const POSTGRES_ROUNDS: usize = 5;
/// Rows of about 1 KiB each: a database of about 1 GiB in both engines.
const ROWS: i64 = 1_000_000;
/// Rows the running hub rewrites between the rehearsal and the downtime, chosen at random: a
/// hub's activity updates (users', servers' and tokens' `last_activity`) land on pages all over
/// the file, not at its end.
const CHANGED_ROWS: i64 = 5_000;
// The SQL statements spell these names out: sqlx takes static SQL text without ceremony.
const HUB_DATABASE: &str = "jupyterhub";
const CLONE_DATABASE: &str = "jupyterhub_clone";
const RESTORED_DATABASE: &str = "bench_restored";
const PASSWORD: &str = "bench-password";

#[tokio::main]
async fn main() -> BenchResult<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("benches/backup.rs measures only under `cargo bench` (make bench)");
        return Ok(());
    }
    let started = Instant::now();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // On the main disk: /tmp may be a tmpfs, which would measure memory instead of a disk.
    let scratch = Scratch::create(repo.join("target/bench-data"))?;
    let machine = Machine::describe(&scratch.0)?;
    let sqlite = bench_sqlite(&scratch.0.join("sqlite")).await?;
    let postgres = bench_postgres(&scratch.0.join("postgres")).await?;
    let report = render_report(&machine, &sqlite, &postgres, started.elapsed());
    fs::create_dir_all(repo.join("docs"))?;
    fs::write(repo.join("docs/BENCHMARKS.md"), report)?;
    eprintln!(
        "wrote docs/BENCHMARKS.md after {}",
        minutes_and_seconds(started.elapsed())
    );
    Ok(())
}

/// The bench's data directory: emptied when the bench starts and removed when it ends, even
/// when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn create(path: PathBuf) -> io::Result<Scratch> {
        // Leftovers of an interrupted run.
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
        fs::create_dir_all(&path)?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// One timed run, and the peak resident memory of what ran, when known.
#[derive(Clone, Copy)]
struct Run {
    seconds: f64,
    peak_rss_kib: Option<u64>,
    /// For in-process work: how far the peak rose above the bench's RSS when the run started.
    rss_growth_kib: Option<u64>,
}

impl Run {
    /// Two steps run one after the other, as one.
    fn then(self, next: Run) -> Run {
        Run {
            seconds: self.seconds + next.seconds,
            peak_rss_kib: self.peak_rss_kib.max(next.peak_rss_kib),
            rss_growth_kib: self.rss_growth_kib.max(next.rss_growth_kib),
        }
    }
}

/// Every run of one measurement, in the order they were taken.
struct Measurement {
    name: &'static str,
    runs: Vec<Run>,
}

impl Measurement {
    fn new(name: &'static str) -> Measurement {
        Measurement {
            name,
            runs: Vec::new(),
        }
    }

    fn record(&mut self, run: Run) {
        eprintln!("  {:<48} {:>8.2} s", self.name, run.seconds);
        self.runs.push(run);
    }

    fn median(&self) -> f64 {
        let mut seconds: Vec<f64> = self.runs.iter().map(|run| run.seconds).collect();
        seconds.sort_by(f64::total_cmp);
        let middle = seconds.len() / 2;
        if seconds.len() % 2 == 1 {
            seconds[middle]
        } else {
            (seconds[middle - 1] + seconds[middle]) / 2.0
        }
    }

    /// The highest peak of all runs, with (for in-process work) its rise above the baseline.
    fn peak_rss(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let peak = self.runs.iter().filter_map(|run| run.peak_rss_kib).max();
        let growth = self.runs.iter().filter_map(|run| run.rss_growth_kib).max();
        match (peak, growth) {
            (Some(peak), Some(growth)) => format!("{:.0} MiB (+{:.0})", mib(peak), mib(growth)),
            (Some(peak), None) => format!("{:.1} MiB", mib(peak)),
            (None, _) => "n/a".into(),
        }
    }

    /// How many times this measurement's median is `other`'s.
    fn ratio_to(&self, other: &Measurement) -> f64 {
        self.median() / other.median()
    }
}

/// Times in-process work. Its peak RSS is the bench process's high-water mark, reset first: it
/// includes the bench's own baseline (the runtime, the libraries) but no child process.
async fn time_async<T>(work: impl Future<Output = BenchResult<T>>) -> BenchResult<(Run, T)> {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0 and later).
    let peak_was_reset = fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = own_peak_rss_kib().filter(|_| peak_was_reset);
    let start = Instant::now();
    let value = work.await?;
    let seconds = start.elapsed().as_secs_f64();
    let peak_rss_kib = own_peak_rss_kib().filter(|_| peak_was_reset);
    let rss_growth_kib = peak_rss_kib
        .zip(rss_before)
        .map(|(peak, before)| peak.saturating_sub(before));
    Ok((
        Run {
            seconds,
            peak_rss_kib,
            rss_growth_kib,
        },
        value,
    ))
}

fn own_peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

const GNU_TIME: &str = "/usr/bin/time";

/// Runs a command to completion, under GNU time when installed, for its peak RSS. (wait4 in this
/// process would not do: a child spawned the vfork way is charged the bench's own RSS, ~40 MiB.)
/// Blocking the async runtime here is fine: nothing else runs on it meanwhile.
fn time_command(command: &mut Command) -> BenchResult<Run> {
    let program = command.get_program().display().to_string();
    let rss_report = tempfile::NamedTempFile::new()?;
    let mut under_time = Path::new(GNU_TIME)
        .exists()
        .then(|| under_gnu_time(command, rss_report.path()));
    let runner = match under_time.as_mut() {
        Some(under_time) => under_time,
        None => command,
    };
    let start = Instant::now();
    let status = runner
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{program}: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("{program} failed: {status}").into());
    }
    // %M is the peak RSS in KiB, on the report's last line (empty without GNU time).
    let peak_rss_kib = fs::read_to_string(rss_report.path())?
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok());
    Ok(Run {
        seconds,
        peak_rss_kib,
        rss_growth_kib: None,
    })
}

/// `command` (program, arguments, environment) run by GNU time, which writes its peak RSS in
/// KiB to `rss_report`.
fn under_gnu_time(command: &Command, rss_report: &Path) -> Command {
    let mut timed = Command::new(GNU_TIME);
    timed
        .args(["--format=%M", "--output"])
        .arg(rss_report)
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(name, value),
            None => timed.env_remove(name),
        };
    }
    timed
}

/// Runs a setup or cleanup command, untimed, failing with its error output.
fn run_checked(command: &mut Command) -> BenchResult<String> {
    let output = command
        .output()
        .map_err(|e| format!("{}: {e}", command.get_program().display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed: {}",
            command.get_program().display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Writes every dirty page to disk, untimed, so that no run pays for the previous one's
/// writes.
fn flush_to_disk() -> BenchResult<()> {
    run_checked(&mut Command::new("sync")).map(drop)
}

// ---------------------------------------------------------------------------------------------
// SQLite

struct SqliteResults {
    sqlite_version: String,
    database_bytes: u64,
    build_seconds: f64,
    back_up_in_downtime: Measurement,
    back_up_seeded: Measurement,
    /// The most bytes a seeded backup wrote into its file, of all rounds.
    seeded_written_bytes: u64,
    back_up: Measurement,
    cp: Measurement,
    cp_and_fsync: Measurement,
    integrity_check: Measurement,
    quick_check: Measurement,
    blake3: Measurement,
    sha256: Measurement,
}

async fn bench_sqlite(dir: &Path) -> BenchResult<SqliteResults> {
    fs::create_dir_all(dir)?;
    let database = dir.join("jupyterhub.sqlite");
    eprintln!("SQLite: building {}", database.display());
    let build_start = Instant::now();
    let sqlite_version = build_sqlite_database(&database).await?;
    let build_seconds = build_start.elapsed().as_secs_f64();
    flush_to_disk()?;
    let database_bytes = fs::metadata(&database)?.len();
    // Reading the whole file also leaves it in the page cache, for every variant alike.
    let (_, mut current_checksum) = size_and_checksum(&database)?;

    // The names the operator's Jobs give them: the backup inside the downtime finds the
    // rehearsal's (checked) copy of the same upgrade by its name.
    let backups = dir.join("hubgrade-backups");
    let rehearsal_copy = backups.join("hubgrade-0123abcd-rehearsal.sqlite");
    let backup = backups.join("hubgrade-0123abcd-db.sqlite");
    let seed = backups.join("hubgrade-0123abcd-db.sqlite.seed");
    let copy = dir.join("copy.sqlite");
    // What an earlier release recorded, to time SHA-256 alone.
    let sha256 = format!("sha256:{}", "0".repeat(64));
    let mut results = SqliteResults {
        sqlite_version,
        database_bytes,
        build_seconds,
        back_up_in_downtime: Measurement::new("hubgrade back_up inside the downtime"),
        back_up_seeded: Measurement::new(
            "hubgrade back_up inside the downtime, seeded by the rehearsal",
        ),
        seeded_written_bytes: 0,
        back_up: Measurement::new("hubgrade back_up with integrity check (rehearsal)"),
        cp: Measurement::new("cp"),
        cp_and_fsync: Measurement::new("cp, then fsync of the copy"),
        integrity_check: Measurement::new("PRAGMA integrity_check alone"),
        quick_check: Measurement::new("PRAGMA quick_check alone (not in back_up)"),
        blake3: Measurement::new("BLAKE3 alone (size_and_checksum)"),
        sha256: Measurement::new("SHA-256 alone (earlier releases' checksum)"),
    };
    for round in 1..=SQLITE_ROUNDS {
        eprintln!("SQLite round {round}/{SQLITE_ROUNDS}");
        let (run, reference) = time_async(async {
            Ok(back_up_for(&database, &rehearsal_copy, SpacePlan::RehearsalCopy).await?)
        })
        .await?;
        if reference.checksum.as_deref() != Some(current_checksum.as_str()) {
            return Err(format!("back_up made a copy that differs: {reference:?}").into());
        }
        if !seed.is_file() {
            return Err("the rehearsal left no seed".into());
        }
        results.back_up.record(run);

        // Its steps again, on the copy it just made (still in the page cache, as it is when
        // back_up runs them).
        let (run, ()) = time_async(check_copy(&rehearsal_copy, "PRAGMA integrity_check")).await?;
        results.integrity_check.record(run);
        // The lighter check SQLite offers, which skips comparing indexes with their tables.
        let (run, ()) = time_async(check_copy(&rehearsal_copy, "PRAGMA quick_check")).await?;
        results.quick_check.record(run);
        let (run, _) = time_async(async { Ok(size_and_checksum(&rehearsal_copy)?) }).await?;
        results.blake3.record(run);
        let (run, _) =
            time_async(async { Ok(size_and_checksum_like(&rehearsal_copy, &sha256)?) }).await?;
        results.sha256.record(run);
        flush_to_disk()?;

        // The hub runs on between the rehearsal and the downtime.
        change_rows(&database).await?;
        current_checksum = size_and_checksum(&database)?.1;
        flush_to_disk()?;

        // The rehearsal's copy and seed are there: the backup inside the downtime brings the
        // seed up to date, removes the copy and leaves the integrity check to it.
        let written_before = bytes_written_by_this_process()?;
        let (run, reference) = time_async(async {
            Ok(back_up_for(&database, &backup, SpacePlan::BackupBeforeMigration).await?)
        })
        .await?;
        let written = bytes_written_by_this_process()? - written_before;
        check_downtime_backup(&reference, &current_checksum, &rehearsal_copy, &seed)?;
        if written > database_bytes / 10 {
            return Err(format!("the seeded backup wrote {written} bytes: no seed used").into());
        }
        results.seeded_written_bytes = results.seeded_written_bytes.max(written);
        results.back_up_seeded.record(run);
        fs::remove_file(&backup)?;
        flush_to_disk()?;

        // The same without a seed, as before: a rehearsal copy (its bytes do not matter) for
        // the integrity check, made untimed.
        fs::copy(&database, &rehearsal_copy)?;
        flush_to_disk()?;
        let (run, reference) = time_async(async {
            Ok(back_up_for(&database, &backup, SpacePlan::BackupBeforeMigration).await?)
        })
        .await?;
        check_downtime_backup(&reference, &current_checksum, &rehearsal_copy, &seed)?;
        results.back_up_in_downtime.record(run);
        fs::remove_file(&backup)?;
        flush_to_disk()?;

        results
            .cp
            .record(time_command(Command::new("cp").arg(&database).arg(&copy))?);
        fs::remove_file(&copy)?;
        flush_to_disk()?;

        // back_up makes its copy durable; cp alone leaves it in the page cache.
        let start = Instant::now();
        let cp = time_command(Command::new("cp").arg(&database).arg(&copy))?;
        File::open(&copy)?.sync_all()?;
        results.cp_and_fsync.record(Run {
            seconds: start.elapsed().as_secs_f64(),
            ..cp
        });
        fs::remove_file(&copy)?;
        flush_to_disk()?;
    }
    fs::remove_dir_all(dir)?;
    Ok(results)
}

/// A hub-shaped table of `ROWS` rows: an id, a unique 32-character token and 960 random bytes
/// (one row per ~1 KiB, about 1 GiB in all). Written without journal and fsync: only the result
/// matters, and it is left in SQLite's default rollback-journal mode, as JupyterHub leaves it.
/// Returns SQLite's version.
async fn build_sqlite_database(path: &Path) -> BenchResult<String> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Off)
        .synchronous(SqliteSynchronous::Off)
        // 256 MiB: the token index is filled in random order.
        .pragma("cache_size", "-262144");
    let mut db = SqliteConnection::connect_with(&options).await?;
    sqlx::raw_sql(
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE, state BLOB NOT NULL)",
    )
    .execute(&mut db)
    .await?;
    // 100,000 rows per statement, each statement one transaction.
    let chunk = 100_000;
    for first in (1..=ROWS).step_by(chunk as usize) {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
             INSERT INTO sessions (id, token, state)
             SELECT i, lower(hex(randomblob(16))), randomblob(960) FROM n",
        )
        .bind(first)
        .bind((first + chunk - 1).min(ROWS))
        .execute(&mut db)
        .await?;
    }
    let (version,): (String,) = sqlx::query_as("SELECT sqlite_version()")
        .fetch_one(&mut db)
        .await?;
    db.close().await?;
    Ok(version)
}

/// What the hub does between the rehearsal and the downtime: [`CHANGED_ROWS`] rows chosen at
/// random get a new `state`, in one transaction, through the rollback journal.
async fn change_rows(path: &Path) -> BenchResult<()> {
    let options = SqliteConnectOptions::new().filename(path);
    let mut db = SqliteConnection::connect_with(&options).await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         UPDATE sessions SET state = randomblob(960)
         WHERE id IN (SELECT abs(random()) % ?2 + 1 FROM n)",
    )
    .bind(CHANGED_ROWS)
    .bind(ROWS)
    .execute(&mut db)
    .await?;
    db.close().await?;
    Ok(())
}

/// The backup inside the downtime is the database's bytes, and the rehearsal's files are gone.
fn check_downtime_backup(
    reference: &hubgrade::machine::BackupRecord,
    checksum: &str,
    rehearsal_copy: &Path,
    seed: &Path,
) -> BenchResult<()> {
    if reference.checksum.as_deref() != Some(checksum) {
        return Err(format!("back_up made a copy that differs: {reference:?}").into());
    }
    if rehearsal_copy.exists() || seed.exists() {
        return Err("the backup inside the downtime left the rehearsal's copy or seed".into());
    }
    Ok(())
}

/// The bytes this process has handed to write calls so far (`wchar` of /proc/self/io, all
/// threads): what tells a seed brought up to date from a full copy.
fn bytes_written_by_this_process() -> BenchResult<u64> {
    let io = fs::read_to_string("/proc/self/io")?;
    let line = io
        .lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .ok_or("no wchar in /proc/self/io")?;
    Ok(line.trim().parse()?)
}

/// `PRAGMA integrity_check` (or `quick_check`) on a read-only connection, as `back_up` runs it.
async fn check_copy(path: &Path, pragma: &'static str) -> BenchResult<()> {
    let options = SqliteConnectOptions::new().filename(path).read_only(true);
    let mut db = SqliteConnection::connect_with(&options).await?;
    let rows: Vec<(String,)> = sqlx::query_as(pragma).fetch_all(&mut db).await?;
    db.close().await?;
    match rows.as_slice() {
        [(ok,)] if ok == "ok" => Ok(()),
        _ => Err(format!("{pragma} on {}: {rows:?}", path.display()).into()),
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

struct PostgresResults {
    server_version: String,
    database_bytes: i64,
    build_seconds: f64,
    clone_bytes: u64,
    hubgrade_dump_bytes: u64,
    raw_dump_bytes: u64,
    clone_database: Measurement,
    hubgrade_dump: Measurement,
    hubgrade_restore: Measurement,
    hubgrade_round_trip: Measurement,
    raw_dump: Measurement,
    raw_restore: Measurement,
    raw_round_trip: Measurement,
    uncompressed_dump: Measurement,
    uncompressed_dump_bytes: u64,
    template_wal_log: Measurement,
    template_file_copy: Measurement,
}

async fn bench_postgres(dir: &Path) -> BenchResult<PostgresResults> {
    let server = PostgresServer::start(dir)?;
    let mut admin = server.connect("postgres").await?;
    let DatabaseUrl::Postgres(hub) = DatabaseUrl::parse(&server.url(HUB_DATABASE))? else {
        return Err("a postgresql:// URL did not parse as PostgreSQL".into());
    };
    let (server_version,): (String,) = sqlx::query_as("SHOW server_version")
        .fetch_one(&mut admin)
        .await?;

    eprintln!("PostgreSQL {server_version}: building the {HUB_DATABASE} database");
    let build_start = Instant::now();
    execute(&mut admin, "CREATE DATABASE jupyterhub").await?;
    build_postgres_database(&server).await?;
    let build_seconds = build_start.elapsed().as_secs_f64();
    let database_bytes = database_size(&mut admin, HUB_DATABASE).await?;

    let hubgrade_dump_file = dir.join("hubgrade.dump");
    let raw_dump_file = dir.join("raw.dump");
    let mut results = PostgresResults {
        server_version,
        database_bytes,
        build_seconds,
        clone_bytes: 0,
        hubgrade_dump_bytes: 0,
        raw_dump_bytes: 0,
        clone_database: Measurement::new("hubgrade clone_database"),
        hubgrade_dump: Measurement::new("hubgrade dump"),
        hubgrade_restore: Measurement::new("hubgrade restore_dump"),
        hubgrade_round_trip: Measurement::new("hubgrade dump + restore_dump"),
        raw_dump: Measurement::new("pg_dump -Fc"),
        raw_restore: Measurement::new("CREATE DATABASE + pg_restore"),
        raw_round_trip: Measurement::new("pg_dump -Fc + pg_restore"),
        uncompressed_dump: Measurement::new("pg_dump -Fc -Z0 (no compression)"),
        uncompressed_dump_bytes: 0,
        template_wal_log: Measurement::new("CREATE DATABASE ... TEMPLATE (WAL_LOG)"),
        template_file_copy: Measurement::new("CREATE DATABASE ... TEMPLATE, FILE_COPY"),
    };
    settle(&mut admin).await?;
    for round in 1..=POSTGRES_ROUNDS {
        eprintln!("PostgreSQL round {round}/{POSTGRES_ROUNDS}");

        let (run, reference) =
            time_async(async { Ok(clone_database(&hub, CLONE_DATABASE).await?) }).await?;
        results.clone_database.record(run);
        results.clone_bytes = reference.size_bytes.unwrap_or(0);
        execute(&mut admin, "DROP DATABASE jupyterhub_clone").await?;
        settle(&mut admin).await?;

        let (dump_run, reference) =
            time_async(async { Ok(dump(&hub, &hubgrade_dump_file).await?) }).await?;
        results.hubgrade_dump.record(dump_run);
        results.hubgrade_dump_bytes = reference.size_bytes.unwrap_or(0);
        let checksum = reference
            .checksum
            .ok_or("hubgrade's dump has no checksum")?;
        settle(&mut admin).await?;
        let stamp = format!("bench{round}");
        let (restore_run, kept) = time_async(async {
            Ok(restore_dump(&hub, &hubgrade_dump_file, &checksum, &stamp).await?)
        })
        .await?;
        results.hubgrade_restore.record(restore_run);
        results
            .hubgrade_round_trip
            .record(dump_run.then(restore_run));
        // Put the original database back, so that every round starts from the same files.
        execute(&mut admin, "DROP DATABASE jupyterhub").await?;
        execute(
            &mut admin,
            AssertSqlSafe(format!("ALTER DATABASE \"{kept}\" RENAME TO jupyterhub")),
        )
        .await?;
        fs::remove_file(&hubgrade_dump_file)?;
        settle(&mut admin).await?;

        let dump_run = time_command(
            server
                .client("pg_dump")
                .args(["-Fc", "--no-owner", "--file"])
                .arg(&raw_dump_file)
                .arg(HUB_DATABASE),
        )?;
        results.raw_dump.record(dump_run);
        results.raw_dump_bytes = fs::metadata(&raw_dump_file)?.len();
        settle(&mut admin).await?;
        // The same flags as restore_dump, into a new database, as restore_dump does.
        let (create_run, ()) =
            time_async(execute(&mut admin, "CREATE DATABASE bench_restored")).await?;
        let restore_run = time_command(
            server
                .client("pg_restore")
                .args([
                    "--no-owner",
                    "--exit-on-error",
                    "--dbname",
                    RESTORED_DATABASE,
                ])
                .arg(&raw_dump_file),
        )?;
        // The peak RSS is pg_restore's: the CREATE DATABASE ran in this process.
        let restore_run = Run {
            seconds: create_run.seconds + restore_run.seconds,
            ..restore_run
        };
        results.raw_restore.record(restore_run);
        results.raw_round_trip.record(dump_run.then(restore_run));
        execute(&mut admin, "DROP DATABASE bench_restored").await?;
        fs::remove_file(&raw_dump_file)?;
        settle(&mut admin).await?;

        // How much of the dump's time is compression.
        let run = time_command(
            server
                .client("pg_dump")
                .args(["-Fc", "-Z0", "--no-owner", "--file"])
                .arg(&raw_dump_file)
                .arg(HUB_DATABASE),
        )?;
        results.uncompressed_dump.record(run);
        results.uncompressed_dump_bytes = fs::metadata(&raw_dump_file)?.len();
        fs::remove_file(&raw_dump_file)?;
        settle(&mut admin).await?;

        // What clone_database costs without its checks, and what another strategy would cost.
        let (run, ()) = time_async(execute(
            &mut admin,
            "CREATE DATABASE jupyterhub_clone TEMPLATE jupyterhub",
        ))
        .await?;
        results.template_wal_log.record(run);
        execute(&mut admin, "DROP DATABASE jupyterhub_clone").await?;
        settle(&mut admin).await?;
        let (run, ()) = time_async(execute(
            &mut admin,
            "CREATE DATABASE jupyterhub_clone TEMPLATE jupyterhub STRATEGY FILE_COPY",
        ))
        .await?;
        results.template_file_copy.record(run);
        execute(&mut admin, "DROP DATABASE jupyterhub_clone").await?;
        settle(&mut admin).await?;
    }
    admin.close().await?;
    Ok(results)
}

/// The same shape as the SQLite database: `ROWS` rows of an id, a unique 32-character token and
/// 896 characters of hex (28 distinct MD5s, so that pg_dump compresses it like hashes and not
/// like a repeated string), about 1 GiB with the indexes. Indexes are built after the rows, as
/// pg_restore builds them; VACUUM sets the hint bits, so that the first measured run does not
/// rewrite every page.
async fn build_postgres_database(server: &PostgresServer) -> BenchResult<()> {
    let mut db = server.connect(HUB_DATABASE).await?;
    execute(
        &mut db,
        "CREATE TABLE sessions (id bigint NOT NULL, token text NOT NULL, state text NOT NULL)",
    )
    .await?;
    sqlx::query(
        "INSERT INTO sessions
         SELECT g, md5('token' || g),
                (SELECT string_agg(md5(g || '.' || i), '') FROM generate_series(1, 28) AS i)
         FROM generate_series(1, $1::bigint) AS g",
    )
    .bind(ROWS)
    .execute(&mut db)
    .await?;
    for statement in [
        "ALTER TABLE sessions ADD PRIMARY KEY (id)",
        "ALTER TABLE sessions ADD UNIQUE (token)",
        // clone_database compares the revision of the copy with the original's.
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('f460b0348206')",
        "VACUUM (FREEZE, ANALYZE)",
    ] {
        execute(&mut db, statement).await?;
    }
    // clone_database and dump refuse to run while anything is connected to the hub's database.
    db.close().await?;
    Ok(())
}

async fn execute(
    db: &mut PgConnection,
    statement: impl sqlx::SqlSafeStr + Send,
) -> BenchResult<()> {
    sqlx::raw_sql(statement).execute(db).await?;
    Ok(())
}

async fn database_size(admin: &mut PgConnection, database: &str) -> BenchResult<i64> {
    let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size($1)")
        .bind(database)
        .fetch_one(admin)
        .await?;
    Ok(size)
}

/// Untimed, between runs: a checkpoint writes the server's dirty buffers, then `sync` the
/// kernel's, so that no run pays for the previous one's writes.
async fn settle(admin: &mut PgConnection) -> BenchResult<()> {
    execute(admin, "CHECKPOINT").await?;
    flush_to_disk()
}

/// A private PostgreSQL server: Debian's binaries, a data directory in the bench's scratch
/// directory owned by the `postgres` user, a free port on 127.0.0.1, password login. Stopped when
/// dropped, also when the bench fails.
struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PostgresServer {
    fn start(dir: &Path) -> BenchResult<PostgresServer> {
        let bin = newest_postgres_bin()?;
        fs::create_dir_all(dir)?;
        let password_file = dir.join("password");
        fs::write(&password_file, PASSWORD)?;
        run_checked(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir),
        )?;
        let data = dir.join("data");
        run_checked(
            as_postgres(&bin, "initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "hubgrade", "--auth=scram-sha-256", "-E", "UTF8"])
                .arg(format!("--pwfile={}", password_file.display())),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // Durability settings are left at their defaults (fsync on), as on a hub's server.
        // Autovacuum is off so that no worker connects to the hub's database during a run:
        // clone_database and dump would refuse to start (see the report).
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c autovacuum=off",
            dir.display()
        );
        let server = PostgresServer {
            bin,
            dir: dir.to_path_buf(),
            port,
        };
        run_checked(
            as_postgres(&server.bin, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-o", &options, "-w", "-t", "60", "-l"])
                .arg(dir.join("server.log"))
                .arg("start"),
        )?;
        Ok(server)
    }

    fn url(&self, database: &str) -> String {
        format!(
            "postgresql://hubgrade:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    async fn connect(&self, database: &str) -> BenchResult<PgConnection> {
        let url = format!(
            "postgres://hubgrade:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        );
        Ok(PgConnection::connect(&url).await?)
    }

    /// pg_dump or pg_restore from PATH, as hubgrade runs them, logged in to this server.
    fn client(&self, tool: &str) -> Command {
        let mut command = Command::new(tool);
        command
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--username", "hubgrade"])
            .env("PGPASSWORD", PASSWORD);
        command
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let stopped = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "stop"])
            .output();
        if !stopped.is_ok_and(|output| output.status.success()) {
            eprintln!("could not stop the bench's PostgreSQL server");
        }
    }
}

fn newest_postgres_bin() -> BenchResult<PathBuf> {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("PostgreSQL is not installed (/usr/lib/postgresql: {e})"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    // Numeric order: 9.6 < 15 < 16.
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(OsStr::to_str)
            .and_then(|version| version.split('.').next()?.parse::<u32>().ok())
    });
    Ok(versions
        .pop()
        .ok_or("no PostgreSQL server binaries under /usr/lib/postgresql")?)
}

/// PostgreSQL's server tools refuse to run as root.
fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    command
}

// ---------------------------------------------------------------------------------------------
// The report

struct Machine {
    date: String,
    cpus: String,
    cpu_model: String,
    memory: String,
    kernel: String,
    scratch_filesystem: String,
}

impl Machine {
    fn describe(scratch: &Path) -> BenchResult<Machine> {
        let cpu_info = fs::read_to_string("/proc/cpuinfo")?;
        let mem_info = fs::read_to_string("/proc/meminfo")?;
        let field = |text: &str, name: &str| -> String {
            text.lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim().to_string())
                .unwrap_or_else(|| "unknown".into())
        };
        let memory = match field(&mem_info, "MemTotal")
            .trim_end_matches(" kB")
            .parse::<f64>()
        {
            Ok(kib) => format!("{:.1} GiB", kib / 1024.0 / 1024.0),
            Err(_) => "unknown".into(),
        };
        let filesystem = run_checked(
            Command::new("df")
                .args(["--output=source,fstype"])
                .arg(scratch),
        )?;
        let scratch_filesystem = filesystem
            .lines()
            .nth(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "unknown".into());
        Ok(Machine {
            date: run_checked(Command::new("date").arg("-u"))?,
            cpus: run_checked(&mut Command::new("nproc"))?,
            cpu_model: field(&cpu_info, "model name"),
            memory,
            kernel: run_checked(Command::new("uname").arg("-r"))?,
            scratch_filesystem,
        })
    }
}

fn render_report(
    machine: &Machine,
    sqlite: &SqliteResults,
    postgres: &PostgresResults,
    elapsed: Duration,
) -> String {
    let mut report = String::new();
    report.push_str("# Backup benchmarks\n\n");
    report.push_str(&format!(
        "Written by `make bench` (benches/backup.rs) on {}; the whole run took {}.\n\n",
        machine.date,
        minutes_and_seconds(elapsed)
    ));
    report.push_str("## Machine\n\n");
    report.push_str(&format!(
        "- CPUs: {} ({})\n- Memory: {}\n- Kernel: {}\n- Scratch directory target/bench-data on: {}\n\
         - SQLite {} (bundled with sqlx), PostgreSQL {}\n\n",
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.scratch_filesystem,
        sqlite.sqlite_version,
        postgres.server_version
    ));
    report.push_str(&format!(
        "## What was measured\n\n\
         Each backup method of hubgrade against the plain tools, on databases of about 1 GiB made \
         by the bench: {} rows of an id, a unique 32-character token and about 1 KiB of \
         random data (random bytes in SQLite, MD5 hex in PostgreSQL). The measurements run \
         interleaved, one after the other in each round ({SQLITE_ROUNDS} rounds for SQLite, \
         {POSTGRES_ROUNDS} for PostgreSQL), with `sync` (and a PostgreSQL `CHECKPOINT`) untimed \
         between any two runs, so that no run pays for another's writes. The machine has more \
         memory than the databases, so every run reads its source from the page cache: the times \
         are writing to disk and computing, not reading from it. The private PostgreSQL server \
         keeps the default durability settings (fsync on, shared_buffers 128 MB), with \
         autovacuum off. Absolute times on this shared machine are noise; compare the ratios of \
         medians. Peak RSS, the highest of all runs: for commands, the command's own (GNU time's \
         %M); for in-process work, the bench process's VmHWM, reset before each run, so it \
         includes the bench's own baseline (in parentheses: the rise above it) and excludes the \
         pg_dump and pg_restore that hubgrade starts. Rerun with `make bench`, which \
         overwrites this file.\n\n",
        thousands(ROWS)
    ));

    report.push_str("## SQLite: `backup::sqlite::back_up` against `cp`\n\n");
    report.push_str(&format!(
        "Database file: {}, in rollback-journal mode with 4 KiB pages; built in {:.0} s.\n\n",
        bytes_with_gib(sqlite.database_bytes),
        sqlite.build_seconds
    ));
    report.push_str(&table(&[
        &sqlite.back_up_in_downtime,
        &sqlite.back_up_seeded,
        &sqlite.cp,
        &sqlite.cp_and_fsync,
        &sqlite.back_up,
        &sqlite.integrity_check,
        &sqlite.quick_check,
        &sqlite.blake3,
        &sqlite.sha256,
    ]));
    let in_downtime = sqlite.back_up_in_downtime.ratio_to(&sqlite.cp);
    let seeded = sqlite.back_up_seeded.ratio_to(&sqlite.cp);
    let goal = 1.5;
    let seeded_verdict = if seeded <= goal {
        "**met**".to_string()
    } else {
        format!(
            "**not met**, by {:.2} s",
            sqlite.back_up_seeded.median() - goal * sqlite.cp.median()
        )
    };
    let verdict = if in_downtime <= goal {
        "**met**".to_string()
    } else {
        let over_cp = sqlite.back_up_in_downtime.median() - sqlite.cp.median();
        format!(
            "**not met**, by {:.2} s ({:.2}× `cp` over the goal). `cp` + fsync alone takes \
             {:.2}× `cp`: waiting for the disk write, which a durable copy needs and `cp` \
             skips, is ≈ {} % of the backup's time over `cp`",
            sqlite.back_up_in_downtime.median() - goal * sqlite.cp.median(),
            in_downtime - goal,
            sqlite.cp_and_fsync.ratio_to(&sqlite.cp),
            percent((sqlite.cp_and_fsync.median() - sqlite.cp.median()) / over_cp),
        )
    };
    let back_up = sqlite.back_up.median();
    report.push_str(&format!(
        "\n- **Inside the downtime, seeded by the rehearsal**, hubgrade's SQLite backup takes \
         **{seeded:.2}×** the time of `cp` (goal: at most {goal}×: {seeded_verdict}), and \
         **{:.2}×** the time of the same backup without a seed. The rehearsal left a durable copy \
         of the database (the seed); between the rehearsal and the downtime the bench plays the \
         running hub and rewrites the `state` of {} rows chosen at random, in one transaction \
         (pages all over the file). The backup then reads the database once under SQLite's \
         write lock with its BLAKE3 checksum, compares each 4 KiB with the seed's and writes \
         only those that differ (at most {} per round here), cuts the seed to the database's \
         length, fdatasyncs, reads the whole result back on a second thread and compares its \
         checksum, and renames it into place. Any doubt about the seed (missing, a link, far \
         from the database's size, a failed update or read-back) makes it a full copy, the row \
         below.\n\
         - **Inside the downtime without a seed** (no rehearsal, or a seed in doubt), \
         hubgrade's SQLite backup takes **{in_downtime:.2}×** the time of `cp` (goal: at most \
         {goal}×: {verdict}), and **{:.2}×** the time of `cp` followed by an fsync of the copy \
         (the backup makes its copy durable and reads it back; `cp` leaves it in the page \
         cache). It copies with the BLAKE3 checksum computed in the same pass, reads the copy \
         back on a second thread and compares, starts the disk writes as it goes, fsyncs, and \
         leaves `PRAGMA integrity_check` to the rehearsal's copy.\n\
         - The rehearsal's copy, before the downtime, with `PRAGMA integrity_check` (as every \
         backup was made before) and the seed it leaves: **{:.1}×** the time of `cp`, \
         **{:.2}×** `cp` + fsync, **{:.1}×** the backup inside the downtime without a seed.\n\
         - Where the rehearsal copy's median time goes: `PRAGMA integrity_check` ≈ {} %, the \
         two checked copies, the rehearsal's and the seed (each measured as the backup inside \
         the downtime without a seed) ≈ {} %, the rest (opening, the space check, renames, and \
         noise) ≈ {} %.\n\
         - BLAKE3 reads and hashes the file in **{:.2}×** the time of SHA-256, the checksum of \
         earlier releases (whose `sha256:` checksums still verify).\n\
         - `PRAGMA quick_check`, which skips comparing the indexes with their tables, takes \
         **{:.2}×** the time of `PRAGMA integrity_check`.\n\n",
        sqlite.back_up_seeded.ratio_to(&sqlite.back_up_in_downtime),
        thousands(CHANGED_ROWS),
        human_bytes(sqlite.seeded_written_bytes),
        sqlite.back_up_in_downtime.ratio_to(&sqlite.cp_and_fsync),
        sqlite.back_up.ratio_to(&sqlite.cp),
        sqlite.back_up.ratio_to(&sqlite.cp_and_fsync),
        sqlite.back_up.ratio_to(&sqlite.back_up_in_downtime),
        percent(sqlite.integrity_check.median() / back_up),
        percent(2.0 * sqlite.back_up_in_downtime.median() / back_up),
        percent(
            (back_up - sqlite.integrity_check.median() - 2.0 * sqlite.back_up_in_downtime.median())
                / back_up
        ),
        sqlite.blake3.ratio_to(&sqlite.sha256),
        sqlite.quick_check.ratio_to(&sqlite.integrity_check),
    ));

    report
        .push_str("## PostgreSQL: `backup::postgres::clone_database` against dump and restore\n\n");
    report.push_str(&format!(
        "Database (`pg_database_size`): {}, built in {:.0} s. Clone: {}. \
         hubgrade's dump: {}; raw `pg_dump -Fc`: {}.\n\n",
        bytes_with_gib(postgres.database_bytes.max(0) as u64),
        postgres.build_seconds,
        bytes_with_gib(postgres.clone_bytes),
        bytes_with_gib(postgres.hubgrade_dump_bytes),
        bytes_with_gib(postgres.raw_dump_bytes),
    ));
    report.push_str(&table(&[
        &postgres.clone_database,
        &postgres.hubgrade_dump,
        &postgres.hubgrade_restore,
        &postgres.hubgrade_round_trip,
        &postgres.raw_dump,
        &postgres.raw_restore,
        &postgres.raw_round_trip,
        &postgres.uncompressed_dump,
        &postgres.template_wal_log,
        &postgres.template_file_copy,
    ]));
    report.push_str(&format!(
        "\n- hubgrade's dump + restore_dump takes **{:.1}×** the time of hubgrade's clone_database.\n\
         - Raw `pg_dump -Fc` + `pg_restore` takes **{:.1}×** the time of clone_database.\n\
         - hubgrade's dump + restore_dump takes **{:.2}×** the time of raw `pg_dump -Fc` + \
         `pg_restore` (dump alone: {:.2}×, restore alone: {:.2}×).\n\
         - Backup alone: hubgrade's dump takes **{:.1}×** the time of clone_database.\n\
         - `pg_dump -Fc -Z0` (no compression; a dump of {} instead of {}) takes **{:.2}×** the \
         time of `pg_dump -Fc` (compressed, as hubgrade dumps).\n\
         - clone_database takes **{:.2}×** the time of its bare `CREATE DATABASE ... TEMPLATE` \
         (the rest is connecting, reading the revision and counting every table's rows in both \
         databases).\n\
         - `CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY` takes **{:.2}×** the time of the \
         default strategy (WAL_LOG), which clone_database uses.\n",
        postgres
            .hubgrade_round_trip
            .ratio_to(&postgres.clone_database),
        postgres.raw_round_trip.ratio_to(&postgres.clone_database),
        postgres
            .hubgrade_round_trip
            .ratio_to(&postgres.raw_round_trip),
        postgres.hubgrade_dump.ratio_to(&postgres.raw_dump),
        postgres.hubgrade_restore.ratio_to(&postgres.raw_restore),
        postgres.hubgrade_dump.ratio_to(&postgres.clone_database),
        gib(postgres.uncompressed_dump_bytes),
        gib(postgres.raw_dump_bytes),
        postgres.uncompressed_dump.ratio_to(&postgres.raw_dump),
        postgres
            .clone_database
            .ratio_to(&postgres.template_wal_log),
        postgres
            .template_file_copy
            .ratio_to(&postgres.template_wal_log),
    ));
    report
}

/// A Markdown table: one row per measurement, every run's time, the median and the peak RSS.
fn table(measurements: &[&Measurement]) -> String {
    let runs = measurements.iter().map(|m| m.runs.len()).max().unwrap_or(0);
    let mut text = String::from("| Measurement |");
    for run in 1..=runs {
        text.push_str(&format!(" run {run} |"));
    }
    text.push_str(" **median** | peak RSS |\n|---|");
    text.push_str(&"---:|".repeat(runs + 2));
    text.push('\n');
    for measurement in measurements {
        text.push_str(&format!("| {} |", measurement.name));
        for run in &measurement.runs {
            text.push_str(&format!(" {:.2} s |", run.seconds));
        }
        text.push_str(&format!(
            " **{:.2} s** | {} |\n",
            measurement.median(),
            measurement.peak_rss()
        ));
    }
    text
}

/// 21.4 MiB.
fn human_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn bytes_with_gib(bytes: u64) -> String {
    format!("{} ({} bytes)", gib(bytes), thousands(bytes as i64))
}

/// 1000000 as 1,000,000.
fn thousands(number: i64) -> String {
    let digits = number.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if number < 0 {
        grouped.insert(0, '-');
    }
    grouped
}

/// A fraction as a whole percentage, never "-0".
fn percent(fraction: f64) -> String {
    let rounded = (100.0 * fraction).round();
    format!("{}", if rounded == 0.0 { 0.0 } else { rounded })
}

fn minutes_and_seconds(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    format!("{} min {:02} s", seconds / 60, seconds % 60)
}
