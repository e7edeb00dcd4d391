//! The small languages: type selection and scopeQ.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piazza_ngsild::query::{ScopeQuery, TypeSelector};
use piazza_ngsild::ActiveContext;

fuzz_target!(|text: &str| {
    let context = ActiveContext::core();
    if let Ok(selector) = TypeSelector::parse(text, &context) {
        let _ = selector.matches(&[context.expand("T")]);
    }
    if let Ok(scope) = ScopeQuery::parse(text) {
        let _ = scope.matches(&["/a/b".to_owned()]);
    }
});
