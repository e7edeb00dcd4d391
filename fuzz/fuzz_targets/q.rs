//! The q query language: parsing, and matching what parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piazza_ngsild::entity::{parse_entity, ParseOptions};
use piazza_ngsild::query::Query;
use piazza_ngsild::ActiveContext;

fuzz_target!(|text: &str| {
    let context = ActiveContext::core();
    if let Ok(query) = Query::parse(text, &context) {
        let probe = serde_json::json!({"id": "urn:x:1", "type": "T", "a": 1, "b": {"value": "x", "c": {"value": [1, 2]}},
            "r": {"type": "Relationship", "object": "urn:y:1"}, "l": {"type": "LanguageProperty", "languageMap": {"it": "ciao"}}});
        if let Ok(entity) = parse_entity(&probe, &context, ParseOptions::CREATE) {
            let _ = query.matches(&entity);
        }
    }
});
