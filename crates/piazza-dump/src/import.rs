//! Importing a dump into a store, batch by batch, with the counts checked
//! at the end against the trailer and against what the store then holds.
//!
//! A dump read from a pipe cannot be checked before it is written, so a
//! bad line can stop an import half-way. What was written is then
//! reported, and the way out is always the same: fix the dump and import
//! again with `force`, which clears each tenant of the dump before writing
//! it. (For a file, the CLI scans it whole first, so a bad file writes
//! nothing.)

use std::io::BufRead;

use piazza_store::{RawKind, RawRecord, Store, Tenant};

use crate::read::{Item, Reader};
use crate::{Counts, Error, Progress};

pub struct ImportOptions {
    /// Import into a store that holds data: each tenant of the dump is
    /// cleared before its records are written; other tenants are kept.
    pub force: bool,
    /// Records written per store transaction.
    pub batch_size: usize,
    /// The records the dump holds, when known (from a scan), for progress.
    pub expected_records: Option<u64>,
}

/// Imports the dump read from `input` into `store`; returns what was
/// written, which is what the trailer counts and what the store holds.
pub async fn import(
    store: &dyn Store,
    input: impl BufRead,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Counts, Error> {
    if !options.force {
        check_target(store).await?;
    }
    progress.begin("importing", options.expected_records);
    let mut importing = Importing {
        store,
        force: options.force,
        batch_size: options.batch_size.max(1),
        progress,
        tenant: None,
        batch: Vec::new(),
        written: Counts::default(),
        touched: false,
    };
    let outcome = importing.run(Reader::new(input)).await;
    progress.end();
    match outcome {
        Ok(counts) => Ok(counts),
        Err(cause) if importing.touched => Err(Error::Partial {
            cause: Box::new(cause),
            written: importing.written,
        }),
        Err(cause) => Err(cause),
    }
}

/// Refuses a target that holds any record (what an import without
/// `force` requires).
pub async fn check_target(store: &dyn Store) -> Result<(), Error> {
    let mut occupied = Vec::new();
    for tenant in store.tenants().await? {
        let records: u64 = store.raw_counts(&tenant).await?.values().sum();
        if records > 0 {
            occupied.push(format!("tenant {tenant} holds {records} records"));
        }
    }
    if occupied.is_empty() {
        Ok(())
    } else {
        Err(Error::TargetNotEmpty {
            tenants: occupied.join(", "),
        })
    }
}

struct Importing<'a> {
    store: &'a dyn Store,
    force: bool,
    batch_size: usize,
    progress: &'a dyn Progress,
    /// The tenant whose section is being read.
    tenant: Option<Tenant>,
    batch: Vec<RawRecord>,
    written: Counts,
    /// Whether the target was changed at all (cleared or written).
    touched: bool,
}

impl Importing<'_> {
    async fn run(&mut self, mut reader: Reader<impl BufRead>) -> Result<Counts, Error> {
        let mut expected = None;
        while let Some(item) = reader.next()? {
            match item {
                Item::Header(_) => {}
                Item::Tenant(tenant) => {
                    self.flush().await?;
                    if self.force {
                        self.touched = true;
                        self.store.clear_tenant(&tenant).await?;
                    }
                    // Lists the tenant, even one with no records.
                    self.store.import_batch(&tenant, Vec::new()).await?;
                    self.touched = true;
                    self.written.tenant(&tenant);
                    self.tenant = Some(tenant);
                }
                Item::Record(record) => {
                    self.batch.push(record);
                    if self.batch.len() >= self.batch_size {
                        self.flush().await?;
                    }
                }
                Item::End(counts) => {
                    self.flush().await?;
                    expected = Some(counts);
                }
            }
        }
        // The reader returns the end only after a trailer that matched the file.
        let expected = expected.ok_or(Error::Truncated { lines: reader.line() })?;
        self.check(&expected).await?;
        Ok(expected)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        let (Some(tenant), false) = (&self.tenant, self.batch.is_empty()) else {
            return Ok(());
        };
        let batch = std::mem::take(&mut self.batch);
        let mut kinds = Counts::default();
        for record in &batch {
            kinds.add(tenant, record.kind(), 1);
        }
        let size = batch.len() as u64;
        self.touched = true;
        self.store.import_batch(tenant, batch).await?;
        for (kind, n) in kinds.tenant(tenant).iter() {
            self.written.add(tenant, *kind, *n);
        }
        self.progress.advance(size);
        Ok(())
    }

    /// What was written, and what the store now holds, are what the
    /// trailer counts (a duplicated id in a dump, say, would hold fewer).
    async fn check(&mut self, expected: &Counts) -> Result<(), Error> {
        for (tenant, kinds) in &expected.0 {
            let stored = self.store.raw_counts(tenant).await?;
            for kind in RawKind::ALL {
                let want = kinds.get(&kind).copied().unwrap_or(0);
                let written = self.written.tenant(tenant).get(&kind).copied().unwrap_or(0);
                let held = stored.get(&kind).copied().unwrap_or(0);
                if written != want || held != want {
                    return Err(Error::StoredMismatch {
                        tenant: tenant.clone(),
                        kind,
                        expected: want,
                        stored: if written != want { written } else { held },
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use piazza_ngsild::entity::{parse_entity, ParseOptions};
    use piazza_ngsild::update::UpdateOutcome;
    use piazza_ngsild::{time, ActiveContext};
    use piazza_store::{Edit, EditOutcome, RawKind, Store, Tenant};
    use piazza_store_embedded::EmbeddedStore;
    use serde_json::json;

    use crate::{export, import, Error, ExportOptions, ImportOptions, Silent};

    fn store() -> (EmbeddedStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        (EmbeddedStore::open(dir.path()).expect("open"), dir)
    }

    async fn fill(store: &EmbeddedStore, tenant: &str, entities: usize) {
        let edits = (0..entities)
            .map(|i| {
                let body = json!({"id": format!("urn:e:{i}"), "type": "T", "n": i});
                let mut entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("entity");
                entity.stamp_new(time::now());
                Edit::new(entity.id.clone(), move |_| {
                    Ok(EditOutcome::put(entity, UpdateOutcome::default()))
                })
            })
            .collect();
        let tenant = Tenant::parse(tenant).expect("tenant");
        for result in store.edit(&tenant, edits).await.expect("edit") {
            result.expect("created");
        }
    }

    async fn dump_of(store: &EmbeddedStore) -> String {
        let mut out = Vec::new();
        let options = ExportOptions {
            piazza: "test".into(),
            backend: "embedded".into(),
            page_size: 3,
        };
        export(store, &mut out, &options, &Silent).await.expect("export");
        String::from_utf8(out).expect("utf-8")
    }

    fn options(force: bool) -> ImportOptions {
        ImportOptions {
            force,
            batch_size: 4,
            expected_records: None,
        }
    }

    /// The dump without its header (which has the time of the export).
    fn body(dump: &str) -> Vec<&str> {
        dump.lines().skip(1).collect()
    }

    #[tokio::test]
    async fn an_import_reproduces_the_export_and_refuses_a_store_with_data() {
        let (source, _a) = store();
        fill(&source, "a", 10).await;
        fill(&source, "b", 2).await;
        let dump = dump_of(&source).await;
        let (target, _b) = store();
        let counts = import(&target, dump.as_bytes(), &options(false), &Silent)
            .await
            .expect("import");
        assert_eq!(counts.0[&Tenant::parse("a").expect("a")][&RawKind::Entity], 10);
        // 10 entities, temporal entities and instances in `a`, 2 of each in `b`.
        assert_eq!(counts.total(), 36);
        assert_eq!(body(&dump_of(&target).await), body(&dump));

        match import(&target, dump.as_bytes(), &options(false), &Silent).await {
            Err(Error::TargetNotEmpty { tenants }) => {
                assert!(tenants.contains("tenant a holds 30 records"), "{tenants}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // --force replaces the tenants of the dump (no duplicates), and only them.
        fill(&target, "c", 1).await;
        import(&target, dump.as_bytes(), &options(true), &Silent)
            .await
            .expect("forced import");
        let c = Tenant::parse("c").expect("c");
        assert_eq!(target.raw_counts(&c).await.expect("counts")[&RawKind::Entity], 1);
        let again = dump_of(&target).await;
        assert_eq!(body(&again).len(), body(&dump).len() + 4, "tenant c is kept");
    }

    #[tokio::test]
    async fn a_bad_line_stops_an_import_that_says_what_it_wrote_and_a_forced_rerun_is_exact() {
        let (source, _a) = store();
        fill(&source, "a", 10).await;
        let dump = dump_of(&source).await;
        let mut lines: Vec<String> = dump.lines().map(str::to_owned).collect();
        // Lines: header, tenant, 10 entities, 10 temporal entities, 10 instances, trailer.
        let broken_at = 15;
        let good = std::mem::replace(&mut lines[broken_at - 1], "{\"kind\": \"instance\", oops".into());
        let broken = lines.join("\n") + "\n";
        let (target, _b) = store();
        match import(&target, broken.as_bytes(), &options(false), &Silent).await {
            Err(Error::Partial { cause, written }) => {
                assert!(matches!(*cause, Error::Malformed { line: 15, .. }), "{cause}");
                // Batches of 4: 12 records were sent before line 15.
                assert_eq!(written.total(), 12, "{written}");
                let message = Error::Partial { cause, written }.to_string();
                assert!(message.contains("line 15") && message.contains("--force"), "{message}");
            }
            other => panic!("expected a partial import, got {other:?}"),
        }
        lines[broken_at - 1] = good;
        let fixed = lines.join("\n") + "\n";
        assert!(matches!(
            import(&target, fixed.as_bytes(), &options(false), &Silent).await,
            Err(Error::TargetNotEmpty { .. })
        ));
        import(&target, fixed.as_bytes(), &options(true), &Silent)
            .await
            .expect("forced re-run");
        assert_eq!(body(&dump_of(&target).await), body(&dump));
    }

    #[tokio::test]
    async fn what_the_store_holds_is_checked_against_the_trailer() {
        let (source, _a) = store();
        fill(&source, "a", 3).await;
        let dump = dump_of(&source).await;
        // The same entity twice, and a trailer that counts both: the store
        // holds one, and the import says so.
        let mut lines: Vec<String> = dump.lines().map(str::to_owned).collect();
        let first_entity = lines
            .iter()
            .position(|l| l.contains("\"kind\":\"entity\""))
            .expect("entity line");
        lines.insert(first_entity, lines[first_entity].clone());
        let trailer = lines.len() - 1;
        lines[trailer] = lines[trailer]
            .replace("\"entity\":3", "\"entity\":4")
            .replace("\"records\":9", "\"records\":10");
        let doubled = lines.join("\n") + "\n";
        let (target, _b) = store();
        match import(&target, doubled.as_bytes(), &options(false), &Silent).await {
            Err(Error::Partial { cause, .. }) => match *cause {
                Error::StoredMismatch {
                    kind: RawKind::Entity,
                    expected: 4,
                    stored: 3,
                    ..
                } => {}
                other => panic!("expected a stored mismatch, got {other}"),
            },
            other => panic!("expected a partial import, got {other:?}"),
        }
    }
}
