//! Reading a dump: line by line in bounded memory, every line checked
//! against the format (header first, records inside their tenant's
//! section, the trailer last and agreeing with what the file holds).

use std::collections::BTreeSet;
use std::io::BufRead;

use piazza_store::{RawKind, RawRecord, Tenant};

use crate::format::{Header, Line, Trailer, FORMAT, VERSION};
use crate::{Counts, Error};

/// A checked line of a dump.
#[derive(Debug)]
pub enum Item {
    Header(Header),
    /// The section of a tenant starts.
    Tenant(Tenant),
    /// A record of the current tenant.
    Record(RawRecord),
    /// The trailer, which agreed with the file: the counts of every section.
    End(Counts),
}

/// Reads and checks a dump, one line at a time.
pub struct Reader<R> {
    input: R,
    buffer: Vec<u8>,
    /// The number of the last line read.
    line: u64,
    header: bool,
    tenant: Option<Tenant>,
    sections: BTreeSet<Tenant>,
    counted: Counts,
    ended: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            buffer: Vec::new(),
            line: 0,
            header: false,
            tenant: None,
            sections: BTreeSet::new(),
            counted: Counts::default(),
            ended: false,
        }
    }

    /// The number of the last line read (for messages).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The next checked line; `None` once the trailer was read and nothing
    /// follows it.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Item>, Error> {
        loop {
            self.buffer.clear();
            let read = self.input.read_until(b'\n', &mut self.buffer).map_err(Error::Read)?;
            if read == 0 {
                return if self.ended {
                    Ok(None)
                } else if self.line == 0 {
                    Err(Error::NotADump {
                        why: "the file is empty".into(),
                    })
                } else {
                    Err(Error::Truncated { lines: self.line })
                };
            }
            self.line += 1;
            let complete = self.buffer.last() == Some(&b'\n');
            let text = self.buffer.trim_ascii();
            if text.is_empty() {
                continue;
            }
            if self.ended {
                return Err(self.malformed("nothing may follow the trailer line"));
            }
            let parsed = serde_json::from_slice::<Line>(text).map_err(|e| {
                if complete {
                    e.to_string()
                } else {
                    // The last line of the file, without its newline.
                    format!("the line is cut short, the dump is truncated ({e})")
                }
            });
            let line = match parsed {
                Ok(line) => line,
                Err(why) if !self.header => return Err(Error::NotADump { why }),
                Err(why) => return Err(self.malformed(&why)),
            };
            return self.check(line).map(Some);
        }
    }

    fn malformed(&self, why: &str) -> Error {
        Error::Malformed {
            line: self.line,
            why: why.to_owned(),
        }
    }

    fn check(&mut self, line: Line) -> Result<Item, Error> {
        if !self.header {
            let Line::Header(header) = line else {
                return Err(Error::NotADump {
                    why: "the first line is not the header".into(),
                });
            };
            if header.format != FORMAT {
                return Err(Error::NotADump {
                    why: format!("its format is '{}'", header.format),
                });
            }
            if header.version == 0 || header.version > VERSION {
                return Err(Error::UnknownVersion {
                    found: header.format,
                    version: header.version,
                });
            }
            self.header = true;
            return Ok(Item::Header(header));
        }
        let kind = line.record_kind();
        match line {
            Line::Header(_) => Err(self.malformed("a second header line")),
            Line::Tenant(section) => {
                let tenant = Tenant::parse(&section.tenant).map_err(|e| self.malformed(&e.detail))?;
                if !self.sections.insert(tenant.clone()) {
                    return Err(self.malformed(&format!("a second section for tenant {tenant}")));
                }
                self.counted.tenant(&tenant);
                self.tenant = Some(tenant.clone());
                Ok(Item::Tenant(tenant))
            }
            Line::Trailer(trailer) => {
                let counts = self.check_trailer(trailer)?;
                self.ended = true;
                Ok(Item::End(counts))
            }
            record => {
                let Some((name, record)) = record.into_record().map_err(|why| self.malformed(&why))? else {
                    return Err(self.malformed("not a record"));
                };
                let Some(tenant) = self.tenant.clone() else {
                    return Err(self.malformed("a record before any tenant line"));
                };
                if name != tenant.name() {
                    return Err(self.malformed(&format!(
                        "a record of tenant '{name}' in the section of tenant {tenant}"
                    )));
                }
                if let Some(kind) = kind {
                    self.counted.add(&tenant, kind, 1);
                }
                Ok(Item::Record(record))
            }
        }
    }

    /// The trailer's counts, when they are those of the file.
    fn check_trailer(&self, trailer: Trailer) -> Result<Counts, Error> {
        let mut expected = Counts::default();
        for (name, kinds) in &trailer.counts {
            let tenant = Tenant::parse(name).map_err(|e| self.malformed(&format!("trailer: {}", e.detail)))?;
            expected.tenant(&tenant);
            for (kind_name, n) in kinds {
                let kind = RawKind::from_name(kind_name)
                    .ok_or_else(|| self.malformed(&format!("trailer: unknown kind '{kind_name}'")))?;
                expected.add(&tenant, kind, *n);
            }
        }
        let tenants: BTreeSet<&Tenant> = expected.0.keys().chain(self.counted.0.keys()).collect();
        for tenant in tenants {
            for kind in RawKind::ALL {
                let of = |counts: &Counts| counts.0.get(tenant).and_then(|c| c.get(&kind)).copied().unwrap_or(0);
                let (want, found) = (of(&expected), of(&self.counted));
                if want != found {
                    return Err(Error::CountMismatch {
                        tenant: tenant.clone(),
                        kind,
                        expected: want,
                        found,
                    });
                }
            }
        }
        if trailer.records != self.counted.total() {
            return Err(self.malformed(&format!(
                "the trailer counts {} records in all, the file holds {}",
                trailer.records,
                self.counted.total()
            )));
        }
        Ok(self.counted.clone())
    }
}

/// What a complete check of a dump found.
#[derive(Debug)]
pub struct Scanned {
    pub header: Header,
    pub counts: Counts,
    /// Lines read, blank ones included.
    pub lines: u64,
}

/// Reads a whole dump and checks it, writing nothing: an import of a file
/// that passes can fail only on the store's side.
pub fn scan(input: impl BufRead) -> Result<Scanned, Error> {
    let mut reader = Reader::new(input);
    let mut header = None;
    let mut counts = Counts::default();
    while let Some(item) = reader.next()? {
        match item {
            Item::Header(h) => header = Some(h),
            Item::End(c) => counts = c,
            Item::Tenant(_) | Item::Record(_) => {}
        }
    }
    let header = header.ok_or(Error::NotADump {
        why: "no header".into(),
    })?;
    Ok(Scanned {
        header,
        counts,
        lines: reader.line(),
    })
}

#[cfg(test)]
mod tests {
    use piazza_store::RawKind;
    use serde_json::{json, Value};

    use super::scan;
    use crate::Error;

    fn header() -> Value {
        json!({"kind": "header", "format": "piazza-dump", "version": 1, "piazza": "0.1.0",
               "backend": "embedded", "exportedAt": "2025-01-02T03:04:05.000006Z"})
    }

    fn entity(tenant: &str, id: &str) -> Value {
        json!({"kind": "entity", "tenant": tenant,
               "entity": {"id": id, "types": ["https://example.org/T"], "attributes": {}}})
    }

    fn trailer(tenant: &str, entities: u64) -> Value {
        json!({"kind": "trailer", "counts": {tenant: {"entity": entities}}, "records": entities})
    }

    fn text(lines: &[Value]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn good() -> Vec<Value> {
        vec![
            header(),
            json!({"kind": "tenant", "tenant": "a"}),
            entity("a", "urn:e:1"),
            entity("a", "urn:e:2"),
            trailer("a", 2),
        ]
    }

    #[test]
    fn a_complete_dump_is_counted_by_tenant_and_kind() {
        let scanned = scan(text(&good()).as_bytes()).expect("valid dump");
        let a = piazza_store::Tenant::parse("a").expect("tenant");
        assert_eq!(scanned.counts.0[&a][&RawKind::Entity], 2);
        assert_eq!(scanned.counts.0[&a][&RawKind::Instance], 0);
        assert_eq!(scanned.counts.total(), 2);
        assert_eq!((scanned.lines, scanned.header.backend.as_str()), (5, "embedded"));
    }

    #[test]
    fn a_malformed_line_is_named_by_its_number() {
        let mut dump = text(&good()[..3]);
        dump.push_str("{\"kind\": \"entity\", \"tenant\": \"a\", \"entity\": {\"id\": \n");
        dump.push_str(&text(&good()[3..]));
        match scan(dump.as_bytes()) {
            Err(Error::Malformed { line: 4, why }) => assert!(why.contains("EOF"), "{why}"),
            other => panic!("expected line 4 to be malformed, got {other:?}"),
        }
        // A line of an unknown kind is malformed too.
        let mut lines = good();
        lines.insert(2, json!({"kind": "gossip", "tenant": "a"}));
        match scan(text(&lines).as_bytes()) {
            Err(Error::Malformed { line: 3, why }) => assert!(why.contains("gossip"), "{why}"),
            other => panic!("expected line 3 to be malformed, got {other:?}"),
        }
    }

    #[test]
    fn a_dump_without_its_trailer_is_truncated() {
        let lines = good();
        let dump = text(&lines[..4]);
        assert!(matches!(scan(dump.as_bytes()), Err(Error::Truncated { lines: 4 })));
        // Cut inside a line: the last line is incomplete.
        let full = text(&lines);
        let cut = &full[..full.len() - 20];
        match scan(cut.as_bytes()) {
            Err(Error::Malformed { line: 5, why }) => assert!(why.contains("truncated"), "{why}"),
            other => panic!("expected a cut line 5, got {other:?}"),
        }
    }

    #[test]
    fn counts_that_disagree_with_the_trailer_are_refused() {
        let mut lines = good();
        lines[4] = trailer("a", 3);
        match scan(text(&lines).as_bytes()) {
            Err(Error::CountMismatch {
                kind: RawKind::Entity,
                expected: 3,
                found: 2,
                ..
            }) => {}
            other => panic!("expected a count mismatch, got {other:?}"),
        }
        // A tenant the trailer does not know is a mismatch as well.
        let mut lines = good();
        lines.insert(4, json!({"kind": "tenant", "tenant": "b"}));
        lines.insert(5, entity("b", "urn:e:1"));
        assert!(matches!(
            scan(text(&lines).as_bytes()),
            Err(Error::CountMismatch {
                expected: 0,
                found: 1,
                ..
            })
        ));
    }

    #[test]
    fn only_known_versions_of_the_format_are_read() {
        let mut lines = good();
        lines[0]["version"] = json!(2);
        assert!(matches!(
            scan(text(&lines).as_bytes()),
            Err(Error::UnknownVersion { version: 2, .. })
        ));
        lines[0]["version"] = json!(1);
        lines[0]["format"] = json!("someone-else");
        assert!(matches!(scan(text(&lines).as_bytes()), Err(Error::NotADump { .. })));
        assert!(matches!(scan(&b""[..]), Err(Error::NotADump { .. })));
        assert!(matches!(
            scan(text(&good()[1..]).as_bytes()),
            Err(Error::NotADump { .. })
        ));
    }

    #[test]
    fn records_belong_to_the_section_of_their_tenant() {
        let mut lines = good();
        lines[3] = entity("b", "urn:e:2");
        assert!(matches!(
            scan(text(&lines).as_bytes()),
            Err(Error::Malformed { line: 4, .. })
        ));
        let mut lines = good();
        lines.remove(1);
        assert!(matches!(
            scan(text(&lines).as_bytes()),
            Err(Error::Malformed { line: 2, .. })
        ));
        let mut lines = good();
        lines.insert(3, json!({"kind": "tenant", "tenant": "a"}));
        assert!(matches!(
            scan(text(&lines).as_bytes()),
            Err(Error::Malformed { line: 4, .. })
        ));
        let mut lines = good();
        lines.push(entity("a", "urn:e:3"));
        assert!(matches!(
            scan(text(&lines).as_bytes()),
            Err(Error::Malformed { line: 6, .. })
        ));
        // Blank lines are only spacing.
        let spaced = text(&good()).replace('\n', "\n\n");
        assert_eq!(scan(spaced.as_bytes()).expect("valid").counts.total(), 2);
    }
}
