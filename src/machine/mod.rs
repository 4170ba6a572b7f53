//! The upgrade state machine, as a pure function.
//!
//! [`decide`] takes what the operator observed ([`World`]), the upgrade's recorded progress
//! ([`Progress`]), the plan derived from the spec ([`Plan`]) and the current time, and returns
//! the one action to take next and the progress to record afterwards. No client, no clock and
//! no I/O live here, so every transition is tested without a cluster.

mod action;
mod backup;
mod decide;
mod phase;
mod plan;
mod progress;
mod world;

pub use action::{Action, Decision, EventKind, Notice};
pub use backup::{BackupMethod, BackupRecord};
pub use decide::{decide, refuse_spec};
pub use phase::Phase;
pub use plan::{
    APPROVED_ANNOTATION, DrainPlan, ImageManagement, MigrationFailure, OnDrainTimeout, Plan,
    RollbackPolicy, Timeouts, Window,
};
pub use progress::{Check, Original, Outcome, Progress, StepRecord, Target};
pub use world::{HubApiAnswers, HubObservation, LockState, Preflight, Release, StepState, World};
