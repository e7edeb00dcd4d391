use serde_json::json;

use super::*;

struct MapLoader(Vec<(&'static str, Value)>);

impl ContextLoader for MapLoader {
    fn load(&self, url: &str) -> Result<Arc<Value>> {
        self.0
            .iter()
            .find(|(u, _)| *u == url)
            .map(|(_, v)| Arc::new(v.clone()))
            .ok_or_else(|| NgsiError::new(ErrorKind::LdContextNotAvailable, url))
    }
}

#[test]
fn core_terms_expand_and_compact() {
    let core = ActiveContext::core();
    assert_eq!(core.expand("location"), "https://uri.etsi.org/ngsi-ld/location");
    assert_eq!(core.compact("https://uri.etsi.org/ngsi-ld/location"), "location");
    assert_eq!(core.expand("Property"), "https://uri.etsi.org/ngsi-ld/Property");
}

#[test]
fn unknown_terms_use_the_default_vocabulary_both_ways() {
    let core = ActiveContext::core();
    let iri = core.expand("temperature");
    assert_eq!(iri, "https://uri.etsi.org/ngsi-ld/default-context/temperature");
    assert_eq!(core.compact(&iri), "temperature");
}

#[test]
fn user_terms_and_prefixes() {
    let user =
        json!({"schema": "https://schema.org/", "name": "schema:name", "Building": "https://example.org/Building"});
    let ctx = ActiveContext::from_user_context(&user, &NoRemoteContexts).unwrap();
    assert_eq!(ctx.expand("name"), "https://schema.org/name");
    assert_eq!(ctx.expand("schema:address"), "https://schema.org/address");
    assert_eq!(ctx.compact("https://schema.org/address"), "schema:address");
    assert_eq!(ctx.compact("https://example.org/Building"), "Building");
    assert_eq!(ctx.expand("urn:ngsi-ld:x"), "urn:ngsi-ld:x");
}

#[test]
fn core_terms_cannot_be_overridden() {
    let user = json!({"location": "https://example.org/location"});
    let ctx = ActiveContext::from_user_context(&user, &NoRemoteContexts).unwrap();
    assert_eq!(ctx.expand("location"), "https://uri.etsi.org/ngsi-ld/location");
}

#[test]
fn remote_contexts_come_from_the_loader() {
    let loader = MapLoader(vec![(
        "http://ctx/a.jsonld",
        json!({"@context": {"speed": "https://example.org/speed"}}),
    )]);
    let user = json!(["http://ctx/a.jsonld", CORE_CONTEXT_URL]);
    let ctx = ActiveContext::from_user_context(&user, &loader).unwrap();
    assert_eq!(ctx.expand("speed"), "https://example.org/speed");
    let missing = ActiveContext::from_user_context(&json!("http://ctx/missing"), &loader).unwrap_err();
    assert_eq!(missing.kind, ErrorKind::LdContextNotAvailable);
}

#[test]
fn core_context_urls_are_recognised() {
    assert!(is_core_context_url(
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
    ));
    assert!(is_core_context_url(
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld"
    ));
    assert!(is_core_context_url(
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.1.jsonld"
    ));
    assert!(!is_core_context_url(
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-non-existing.jsonld"
    ));
}
