//! The lines of a dump, as serde sees them, and their conversion from and
//! to the store's raw records.
//!
//! The wire names are the format's, not the store's: a field renamed in a
//! Rust type must not change what older dumps mean. Entity and attribute
//! documents are the exception on purpose — they are the stored documents
//! (expanded names, piazza's own member names), so that an entity comes
//! back exactly as it was written.

use std::collections::BTreeMap;

use piazza_ngsild::time::Timestamp;
use piazza_ngsild::{Attribute, Entity};
use piazza_store::{
    ContextKind, DeliveryStats, RawInstance, RawKind, RawNotice, RawRecord, RawTemporalEntity, ResourceKind,
    StoredContext, Tenant,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `format` member of the header.
pub const FORMAT: &str = "piazza-dump";
/// The version this piazza writes, and the newest it reads.
pub const VERSION: u32 = 1;

/// One line of a dump.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Line {
    Header(Header),
    /// Starts the section of a tenant: its records follow.
    Tenant(TenantLine),
    Context(ContextLine),
    Resource(ResourceLine),
    DeliveryStats(DeliveryStatsLine),
    Entity(EntityLine),
    TemporalEntity(TemporalEntityLine),
    Instance(Box<InstanceLine>),
    Notice(NoticeLine),
    Trailer(Trailer),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The piazza version that wrote the dump.
    pub piazza: String,
    /// The backend it was read from (`embedded`, `postgres`).
    pub backend: String,
    #[serde(with = "stamp")]
    pub exported_at: Timestamp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantLine {
    /// `""` is the default tenant.
    pub tenant: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextLine {
    pub tenant: String,
    pub id: String,
    pub url: String,
    /// `Hosted`, `Cached` or `ImplicitlyCreated`.
    pub context_kind: String,
    pub document: Value,
    #[serde(with = "stamp")]
    pub created_at: Timestamp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLine {
    pub tenant: String,
    /// `subscription`.
    pub resource_kind: String,
    pub id: String,
    pub document: Value,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatsLine {
    pub tenant: String,
    pub subscription: String,
    pub times_sent: u64,
    pub times_failed: u64,
    #[serde(default, with = "stamp_opt", skip_serializing_if = "Option::is_none")]
    pub last_notification: Option<Timestamp>,
    #[serde(default, with = "stamp_opt", skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    #[serde(default, with = "stamp_opt", skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Timestamp>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityLine {
    pub tenant: String,
    /// The stored document (expanded names, system timestamps).
    pub entity: Entity,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemporalEntityLine {
    pub tenant: String,
    pub id: String,
    pub types: Vec<String>,
    #[serde(default)]
    pub scope: Vec<String>,
    #[serde(with = "stamp")]
    pub created_at: Timestamp,
    #[serde(with = "stamp")]
    pub modified_at: Timestamp,
    #[serde(default, with = "stamp_opt", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceLine {
    pub tenant: String,
    pub entity: String,
    pub attr: String,
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    #[serde(default, with = "stamp_opt", skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    #[serde(with = "stamp")]
    pub created_at: Timestamp,
    #[serde(with = "stamp")]
    pub modified_at: Timestamp,
    #[serde(default, with = "stamp_opt", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
    /// The stored attribute document.
    pub attribute: Attribute,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticeLine {
    pub tenant: String,
    pub subscription: String,
    pub entity: String,
    pub notice: Value,
    #[serde(with = "stamp")]
    pub recorded_at: Timestamp,
}

/// The last line: how many records of each kind each tenant's section holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trailer {
    /// Tenant name → kind name → records.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Every record line (all tenants, all kinds).
    pub records: u64,
}

impl Line {
    /// A record as its line.
    pub fn of(tenant: &Tenant, record: RawRecord) -> Line {
        let tenant = tenant.name().to_owned();
        match record {
            RawRecord::Context(c) => Line::Context(ContextLine {
                tenant,
                id: c.id,
                url: c.url,
                context_kind: c.kind.name().to_owned(),
                document: c.document,
                created_at: c.created_at,
            }),
            RawRecord::Resource { kind, id, document } => Line::Resource(ResourceLine {
                tenant,
                resource_kind: kind.name().to_owned(),
                id,
                document,
            }),
            RawRecord::DeliveryStats { subscription_id, stats } => Line::DeliveryStats(DeliveryStatsLine {
                tenant,
                subscription: subscription_id,
                times_sent: stats.times_sent,
                times_failed: stats.times_failed,
                last_notification: stats.last_notification,
                last_success: stats.last_success,
                last_failure: stats.last_failure,
            }),
            RawRecord::Entity(entity) => Line::Entity(EntityLine { tenant, entity }),
            RawRecord::TemporalEntity(t) => Line::TemporalEntity(TemporalEntityLine {
                tenant,
                id: t.id,
                types: t.types,
                scope: t.scope,
                created_at: t.created_at,
                modified_at: t.modified_at,
                deleted_at: t.deleted_at,
            }),
            RawRecord::Instance(i) => Line::Instance(Box::new(InstanceLine {
                tenant,
                entity: i.entity_id,
                attr: i.attr,
                instance_id: i.instance_id,
                dataset_id: i.dataset_id,
                observed_at: i.observed_at,
                created_at: i.created_at,
                modified_at: i.modified_at,
                deleted_at: i.deleted_at,
                attribute: i.attribute,
            })),
            RawRecord::Notice(n) => Line::Notice(NoticeLine {
                tenant,
                subscription: n.subscription_id,
                entity: n.entity_id,
                notice: n.notice,
                recorded_at: n.recorded_at,
            }),
        }
    }

    /// A record line as its tenant name and record; `Ok(None)` for the
    /// header, tenant and trailer lines; `Err` says what is wrong with it.
    pub fn into_record(self) -> Result<Option<(String, RawRecord)>, String> {
        Ok(Some(match self {
            Line::Header(_) | Line::Tenant(_) | Line::Trailer(_) => return Ok(None),
            Line::Context(c) => {
                let kind = ContextKind::from_name(&c.context_kind)
                    .ok_or_else(|| format!("unknown contextKind '{}'", c.context_kind))?;
                let context = StoredContext {
                    id: c.id,
                    url: c.url,
                    kind,
                    document: c.document,
                    created_at: c.created_at,
                };
                (c.tenant, RawRecord::Context(context))
            }
            Line::Resource(r) => {
                let kind = ResourceKind::from_name(&r.resource_kind)
                    .ok_or_else(|| format!("unknown resourceKind '{}'", r.resource_kind))?;
                let record = RawRecord::Resource {
                    kind,
                    id: r.id,
                    document: r.document,
                };
                (r.tenant, record)
            }
            Line::DeliveryStats(d) => {
                let stats = DeliveryStats {
                    times_sent: d.times_sent,
                    times_failed: d.times_failed,
                    last_notification: d.last_notification,
                    last_success: d.last_success,
                    last_failure: d.last_failure,
                };
                let record = RawRecord::DeliveryStats {
                    subscription_id: d.subscription,
                    stats,
                };
                (d.tenant, record)
            }
            Line::Entity(e) => (e.tenant, RawRecord::Entity(e.entity)),
            Line::TemporalEntity(t) => {
                let row = RawTemporalEntity {
                    id: t.id,
                    types: t.types,
                    scope: t.scope,
                    created_at: t.created_at,
                    modified_at: t.modified_at,
                    deleted_at: t.deleted_at,
                };
                (t.tenant, RawRecord::TemporalEntity(row))
            }
            Line::Instance(i) => {
                let instance = RawInstance {
                    entity_id: i.entity,
                    attr: i.attr,
                    instance_id: i.instance_id,
                    dataset_id: i.dataset_id,
                    observed_at: i.observed_at,
                    created_at: i.created_at,
                    modified_at: i.modified_at,
                    deleted_at: i.deleted_at,
                    attribute: i.attribute,
                };
                (i.tenant, RawRecord::Instance(Box::new(instance)))
            }
            Line::Notice(n) => {
                let notice = RawNotice {
                    subscription_id: n.subscription,
                    entity_id: n.entity,
                    notice: n.notice,
                    recorded_at: n.recorded_at,
                };
                (n.tenant, RawRecord::Notice(notice))
            }
        }))
    }

    /// The kind of a record line.
    pub fn record_kind(&self) -> Option<RawKind> {
        Some(match self {
            Line::Header(_) | Line::Tenant(_) | Line::Trailer(_) => return None,
            Line::Context(_) => RawKind::Context,
            Line::Resource(_) => RawKind::Resource,
            Line::DeliveryStats(_) => RawKind::DeliveryStats,
            Line::Entity(_) => RawKind::Entity,
            Line::TemporalEntity(_) => RawKind::TemporalEntity,
            Line::Instance(_) => RawKind::Instance,
            Line::Notice(_) => RawKind::Notice,
        })
    }
}

/// Timestamps as the API writes them: RFC 3339, UTC, microseconds.
mod stamp {
    use piazza_ngsild::time::{self, Timestamp};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&time::format(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        time::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not a timestamp")))
    }
}

mod stamp_opt {
    use piazza_ngsild::time::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(at) => super::stamp::serialize(at, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| {
            piazza_ngsild::time::parse(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not a timestamp")))
        })
        .transpose()
    }
}
