use proptest::prelude::*;

use super::*;
use crate::error::ErrorKind;

fn scopes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Asserts each query's outcome against `entity_scopes`, reporting the failing one.
fn check(entity_scopes: &[&str], cases: &[(&str, bool)]) {
    let entity_scopes = scopes(entity_scopes);
    for (query, expected) in cases {
        let parsed = ScopeQuery::parse(query).unwrap_or_else(|e| panic!("'{query}' should parse: {e}"));
        assert_eq!(
            parsed.matches(&entity_scopes),
            *expected,
            "{query} on {entity_scopes:?}"
        );
    }
}

#[test]
fn exact_scopes() {
    check(
        &["/Madrid/Gardens/ParqueNorte"],
        &[
            ("/Madrid/Gardens/ParqueNorte", true),
            ("/Madrid/Gardens", false),
            ("/Madrid", false),
            ("/Madrid/Gardens/ParqueNorte/Fountain", false),
            ("/Madrid/Gardens/ParqueSur", false),
            ("/madrid/gardens/parquenorte", false),
        ],
    );
}

#[test]
fn descendants() {
    check(
        &["/Madrid/Gardens/ParqueNorte"],
        &[
            ("/#", true),
            ("/Madrid/#", true),
            ("/Madrid/Gardens/#", true),
            ("/Madrid/Gardens/ParqueNorte/#", true),
            ("/Madrid/Gardens/ParqueNorte/Fountain/#", false),
            ("/Madrid/Streets/#", false),
            ("/Mad/#", false),
        ],
    );
}

#[test]
fn single_level_wildcards() {
    check(
        &["/Madrid/Gardens/ParqueNorte"],
        &[
            ("/Madrid/+/ParqueNorte", true),
            ("/+/+/+", true),
            ("/+/Gardens/+", true),
            ("/Madrid/+", false),
            ("/+/+/+/+", false),
            ("/Madrid/+/ParqueSur", false),
            ("/+/#", true),
            ("/Madrid/+/#", true),
        ],
    );
}

#[test]
fn and_or_and_parentheses() {
    let entity = &["/Madrid/Gardens/ParqueNorte", "/Company/Sales"];
    check(
        entity,
        &[
            ("/Madrid/#;/Company/Sales", true),
            ("/Madrid/#;/Company/Support", false),
            ("/Madrid/#,/Company/Support", true),
            ("/Madrid/#|/Company/Support", true),
            ("/Rome/#|/Company/Support", false),
            // AND binds tighter: (/Rome;/Company/Sales) | /Madrid/#
            ("/Rome;/Company/Sales|/Madrid/#", true),
            ("/Rome;(/Company/Sales|/Madrid/#)", false),
            ("(/Rome|/Madrid/#);(/Company/+)", true),
            (" ( /Rome , /Madrid/# ) ; /Company/Sales ", true),
        ],
    );
}

#[test]
fn any_scope_of_the_entity_may_match_each_term() {
    check(
        &["/a/b", "/c"],
        &[
            ("/c", true),
            ("/a/b", true),
            ("/a/b;/c", true),
            ("/a/#;/c/#", true),
            ("/a;/c", false),
        ],
    );
}

#[test]
fn entities_without_scopes_never_match() {
    for query in ["/#", "/a", "/+", "/a/#|/#", "(/#)"] {
        let parsed = ScopeQuery::parse(query).expect(query);
        assert!(!parsed.matches(&[]), "{query}");
    }
}

#[test]
fn garbage_is_bad_request_data() {
    let bad = [
        "", " ", "/", "//", "a", "a/b", "/a/", "/a//b", "/a/#/b", "/#/#", "/a#", "/a+", "/a/+b", "#", "/a;", ";/a",
        "/a,", "/a|", "(/a", "/a)", "()", "/a /b", "/a\"b", "/a=b", "/a[b]",
    ];
    for text in bad {
        let error = ScopeQuery::parse(text).expect_err(text);
        assert_eq!(error.kind, ErrorKind::BadRequestData, "{text}");
    }
}

#[test]
fn nesting_is_limited() {
    let deep = format!("{}/a{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
    assert!(ScopeQuery::parse(&deep).is_err());
    let shallow = format!("{}/a{}", "(".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1));
    assert!(ScopeQuery::parse(&shallow).is_ok());
    assert!(ScopeQuery::parse(&"(".repeat(100_000)).is_err());
}

#[test]
fn non_ascii_levels() {
    check(
        &["/España/Jardín"],
        &[("/España/Jardín", true), ("/España/#", true), ("/+/Jardín", true)],
    );
    assert!(ScopeQuery::parse("/é(").is_err());
}

proptest! {
    #[test]
    fn parse_never_panics(text in ".{0,64}") {
        let _ = ScopeQuery::parse(&text);
    }

    #[test]
    fn parse_and_match_never_panic_on_scope_like_text(text in r"[ab/#+;,|() ]{0,32}") {
        if let Ok(query) = ScopeQuery::parse(&text) {
            let _ = query.matches(&scopes(&["/a/b", "/b", "/", "", "a"]));
        }
    }
}
