//! Entity bodies: any JSON must parse to an entity or to a 400, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piazza_ngsild::entity::{parse_entity, ParseOptions};
use piazza_ngsild::render::{render_entity, RenderOptions};
use piazza_ngsild::ActiveContext;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let context = ActiveContext::core();
    for options in [ParseOptions::CREATE, ParseOptions::MERGE] {
        if let Ok(entity) = parse_entity(&body, &context, options) {
            let _ = render_entity(&entity, &context, &RenderOptions::default());
        }
    }
    let _ = ActiveContext::from_user_context(&body, &piazza_ngsild::jsonld::NoRemoteContexts);
});
