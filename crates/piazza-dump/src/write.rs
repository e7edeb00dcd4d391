//! Writing a dump: every tenant of a store, page by page, so a store of
//! any size is exported in bounded memory.

use std::collections::BTreeMap;
use std::io::Write;

use piazza_store::{RawKind, RawRecord, Store, Tenant};

use crate::format::{Header, Line, TenantLine, Trailer, FORMAT, VERSION};
use crate::{Counts, Error, Progress};

pub struct ExportOptions {
    /// The piazza version writing the dump.
    pub piazza: String,
    /// The backend read (`embedded`, `postgres`).
    pub backend: String,
    /// Records read from the store at a time.
    pub page_size: usize,
}

/// Writes lines of NDJSON, counting the records.
struct LineWriter<W> {
    out: W,
    counts: Counts,
}

impl<W: Write> LineWriter<W> {
    fn line(&mut self, line: &Line) -> Result<(), Error> {
        serde_json::to_writer(&mut self.out, line).map_err(|e| Error::Write(e.into()))?;
        self.out.write_all(b"\n").map_err(Error::Write)
    }

    fn record(&mut self, tenant: &Tenant, record: RawRecord) -> Result<(), Error> {
        self.counts.add(tenant, record.kind(), 1);
        self.line(&Line::of(tenant, record))
    }
}

/// Exports every tenant of `store` to `out`; returns what was written.
/// The store should not change meanwhile (a data dir is locked by the
/// export; on PostgreSQL, stop the servers): counts taken before each
/// tenant are checked against what was exported.
pub async fn export(
    store: &dyn Store,
    out: impl Write,
    options: &ExportOptions,
    progress: &dyn Progress,
) -> Result<Counts, Error> {
    let mut sections = Vec::new();
    for tenant in store.tenants().await? {
        let counts = store.raw_counts(&tenant).await?;
        // The default tenant is always listed; it has a section only when
        // something was written in it.
        if store.tenant_exists(&tenant).await? || counts.values().any(|n| *n > 0) {
            sections.push((tenant, counts));
        }
    }
    let total = sections.iter().flat_map(|(_, c)| c.values()).sum();
    progress.begin("exporting", Some(total));
    let mut writer = LineWriter {
        out,
        counts: Counts::default(),
    };
    writer.line(&Line::Header(Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        piazza: options.piazza.clone(),
        backend: options.backend.clone(),
        exported_at: piazza_ngsild::time::now(),
    }))?;
    let page_size = options.page_size.max(1);
    for (tenant, before) in &sections {
        writer.line(&Line::Tenant(TenantLine {
            tenant: tenant.name().to_owned(),
        }))?;
        writer.counts.tenant(tenant);
        for kind in RawKind::ALL {
            let mut after: Option<String> = None;
            loop {
                let page = store.export_page(tenant, kind, after.as_deref(), page_size).await?;
                progress.advance(page.records.len() as u64);
                for record in page.records {
                    writer.record(tenant, record)?;
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let exported = writer.counts.tenant(tenant).get(&kind).copied().unwrap_or(0);
            let counted = before.get(&kind).copied().unwrap_or(0);
            if exported != counted {
                return Err(Error::ChangedDuringExport {
                    tenant: tenant.clone(),
                    kind,
                    before: counted,
                    exported,
                });
            }
        }
    }
    let counts: BTreeMap<String, BTreeMap<String, u64>> = writer
        .counts
        .0
        .iter()
        .map(|(tenant, kinds)| {
            let kinds = kinds.iter().map(|(k, n)| (k.name().to_owned(), *n)).collect();
            (tenant.name().to_owned(), kinds)
        })
        .collect();
    let records = writer.counts.total();
    writer.line(&Line::Trailer(Trailer { counts, records }))?;
    writer.out.flush().map_err(Error::Write)?;
    progress.end();
    Ok(writer.counts)
}
