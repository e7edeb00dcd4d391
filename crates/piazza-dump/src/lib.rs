//! The dump of a whole store, to move a data dir from one backend to the
//! other (`piazza export`, `piazza import ndjson`): everything each tenant
//! holds — entities as stored, history, @contexts, subscriptions, their
//! delivery statistics and pending notifications — read and written raw
//! through the store port, so nothing is re-interpreted on the way.
//!
//! The format is NDJSON, one JSON object per line, its `kind` first:
//!
//! ```text
//! {"kind":"header","format":"piazza-dump","version":1,"piazza":"0.1.0","backend":"embedded","exportedAt":"…"}
//! {"kind":"tenant","tenant":""}                      the default tenant's section
//! {"kind":"context","tenant":"",…}                   its records, kind by kind
//! {"kind":"resource",…} {"kind":"deliveryStats",…} {"kind":"entity",…}
//! {"kind":"temporalEntity",…} {"kind":"instance",…} {"kind":"notice",…}
//! {"kind":"tenant","tenant":"comune-prato"}          the next tenant …
//! {"kind":"trailer","counts":{"":{"context":0,…},…},"records":1234}
//! ```
//!
//! Why a trailer: a dump is written as it is read, so only the end knows
//! the counts; a file without its trailer is known to be cut short, and
//! an import checks both the file and the store against it. Why a tenant
//! on every record line too: a line then means the same on its own
//! (`grep`, `split`), and a spliced file is caught.

use std::collections::BTreeMap;
use std::fmt;

use piazza_store::{RawCounts, RawKind, StoreError, Tenant};

pub mod format;
mod import;
mod read;
mod write;

pub use import::{check_target, import, ImportOptions};
pub use read::{scan, Item, Reader, Scanned};
pub use write::{export, ExportOptions};

/// Records per tenant and kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<Tenant, RawCounts>);

impl Counts {
    pub fn add(&mut self, tenant: &Tenant, kind: RawKind, n: u64) {
        *self.tenant(tenant).entry(kind).or_default() += n;
    }

    /// The counts of `tenant`, every kind listed (from zero).
    pub fn tenant(&mut self, tenant: &Tenant) -> &mut RawCounts {
        self.0
            .entry(tenant.clone())
            .or_insert_with(|| RawKind::ALL.into_iter().map(|k| (k, 0)).collect())
    }

    pub fn total(&self) -> u64 {
        self.0.values().flat_map(|c| c.values()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// `n` records of `kind`, in words.
fn counted(kind: RawKind, n: u64) -> String {
    let (one, many) = match kind {
        RawKind::Context => ("@context", "@contexts"),
        // Every resource is a subscription so far.
        RawKind::Resource => ("subscription", "subscriptions"),
        RawKind::DeliveryStats => ("delivery statistics", "delivery statistics"),
        RawKind::Entity => ("entity", "entities"),
        RawKind::TemporalEntity => ("temporal entity", "temporal entities"),
        RawKind::Instance => ("attribute instance", "attribute instances"),
        RawKind::Notice => ("pending notification", "pending notifications"),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line per tenant: `tenant (default): 3 entities, 12 attribute instances, …`.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no tenant");
        }
        for (i, (tenant, counts)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            let kinds: Vec<String> = counts.iter().map(|(kind, n)| counted(*kind, *n)).collect();
            write!(f, "tenant {tenant}: {}", kinds.join(", "))?;
        }
        Ok(())
    }
}

/// How a long export or import shows where it is (a bar on a terminal).
pub trait Progress: Sync {
    /// A new phase of `total` records (unknown: `None`).
    fn begin(&self, _label: &str, _total: Option<u64>) {}
    fn advance(&self, _records: u64) {}
    fn end(&self) {}
}

/// No progress shown.
pub struct Silent;

impl Progress for Silent {}

/// Everything that can go wrong moving a dump.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the dump: {0}")]
    Read(std::io::Error),
    #[error("cannot write the dump: {0}")]
    Write(std::io::Error),
    #[error("line {line}: {why}")]
    Malformed { line: u64, why: String },
    #[error("this is not a piazza dump: line 1 is not a {} header ({why})", format::FORMAT)]
    NotADump { why: String },
    #[error(
        "the dump is {found} version {version}; this piazza reads {} version {} at most: \
         import it with the piazza version that wrote it, or a newer one",
        format::FORMAT,
        format::VERSION
    )]
    UnknownVersion { found: String, version: u32 },
    #[error("the dump is truncated: it ends after line {lines} without its trailer line")]
    Truncated { lines: u64 },
    #[error("the trailer counts {expected} {kind} records for tenant {tenant}, but the file holds {found}")]
    CountMismatch {
        tenant: Tenant,
        kind: RawKind,
        expected: u64,
        found: u64,
    },
    #[error("after the import, tenant {tenant} holds {stored} {kind} records where the dump has {expected}")]
    StoredMismatch {
        tenant: Tenant,
        kind: RawKind,
        expected: u64,
        stored: u64,
    },
    #[error(
        "the store changed during the export: tenant {tenant} had {before} {kind} records at the start and \
         {exported} were exported; stop every piazza writing to it and export again"
    )]
    ChangedDuringExport {
        tenant: Tenant,
        kind: RawKind,
        before: u64,
        exported: u64,
    },
    #[error(
        "the target store is not empty ({tenants}): import into an empty store, or add --force to replace \
         the tenants the dump holds"
    )]
    TargetNotEmpty { tenants: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A failure after records were written: what is in the target now.
    #[error(
        "{cause}\nthe import stopped there, after writing:\n{written}\nthe target holds a partial import: fix \
         the dump and run the import again with --force, which replaces those tenants"
    )]
    Partial { cause: Box<Error>, written: Counts },
}
