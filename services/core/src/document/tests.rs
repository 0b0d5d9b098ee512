use serde_json::{Value, json};

use super::*;

// --- canonical JSON ---------------------------------------------------------------------

fn canonical_double(bits: u64) -> String {
    canonical_json(&Value::from(f64::from_bits(bits)))
}

#[test]
fn numbers_follow_the_rfc_8785_appendix_b_table() {
    let table = [
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for (bits, expected) in table {
        assert_eq!(canonical_double(bits), expected, "bits {bits:016x}");
    }
}

#[test]
fn exact_ties_between_shortest_digits_round_to_even_like_ecmascript() {
    // Each value lies exactly halfway between two shortest candidates (…x25 or …x5);
    // Rust's `{:e}` rounds up, V8 and JCS take the even digit.
    assert_eq!(canonical_double(0x4314310000000005), "1420843900993537.2");
    assert_eq!(canonical_double(0x42e42e0000000004), "177502408409088.12");
    assert_eq!(canonical_double(0xc31c310000000001), "-1983793854414848.2");
}

#[test]
fn floats_take_the_ecmascript_layout() {
    let cases = [
        (1.0, "1"),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (1.5e-7, "1.5e-7"),
        (123456789012345680000.0, "123456789012345680000"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (1e23, "1e+23"),
    ];
    for (float, expected) in cases {
        assert_eq!(canonical_json(&Value::from(float)), expected, "{float:e}");
    }
}

#[test]
fn integers_print_exactly_even_beyond_two_to_the_53() {
    assert_eq!(
        canonical_json(&json!(9007199254740992_u64)),
        "9007199254740992"
    );
    assert_eq!(
        canonical_json(&json!(-9007199254740992_i64)),
        "-9007199254740992"
    );
    assert_eq!(canonical_json(&json!(u64::MAX)), "18446744073709551615");
    assert_eq!(canonical_json(&json!(i64::MIN)), "-9223372036854775808");
    // Too large for u64, so serde_json parses it as a double.
    let parsed: Value = serde_json::from_str("123456789012345678901").unwrap();
    assert_eq!(canonical_json(&parsed), "123456789012345680000");
}

#[test]
fn rfc_8785_sample_canonicalizes_byte_for_byte() {
    let input = r#"{
        "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
        "literals": [null, true, false]
    }"#;
    let value: Value = serde_json::from_str(input).unwrap();
    assert_eq!(
        canonical_json(&value),
        r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
    );
}

#[test]
fn keys_sort_by_utf16_code_units_not_bytes() {
    // The RFC 8785 §3.2.3 sample: U+1F600 (surrogates D83D DE00) sorts before U+FB33,
    // although its UTF-8 bytes (F0 …) sort after U+FB33's (EF …).
    let value = json!({
        "\u{20ac}": "Euro Sign",
        "\r": "Carriage Return",
        "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\u{1f600}": "Emoji: Grinning Face",
        "\u{80}": "Control",
        "\u{f6}": "Latin Small Letter O With Diaeresis"
    });
    let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
        \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
        \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
    assert_eq!(canonical_json(&value), expected);
}

#[test]
fn nested_objects_sort_at_every_level_without_whitespace() {
    let value = json!({"b": [3, {"z": 1, "a": [true, null]}], "a": {"d": "x", "c": 1.0}});
    assert_eq!(
        canonical_json(&value),
        r#"{"a":{"c":1,"d":"x"},"b":[3,{"a":[true,null],"z":1}]}"#
    );
}

#[test]
fn strings_escape_only_quotes_backslashes_and_control_characters() {
    let value = json!("q\" b\\ \u{8}\t\n\u{c}\r \u{1} \u{1f} \u{7f} é 😀 / <");
    assert_eq!(
        canonical_json(&value),
        "\"q\\\" b\\\\ \\b\\t\\n\\f\\r \\u0001 \\u001f \u{7f} é 😀 / <\""
    );
}

#[test]
fn sha256_hex_is_lowercase_hex_of_the_utf8_bytes() {
    assert_eq!(
        sha256_hex(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let reordered: Value = serde_json::from_str(r#"{ "b": 1.0, "a": [1] }"#).unwrap();
    assert_eq!(
        sha256_hex(&canonical_json(&reordered)),
        sha256_hex(&canonical_json(&json!({"a": [1], "b": 1})))
    );
}

// --- JSON Patch -------------------------------------------------------------------------

fn ops(patch: Value) -> Vec<PatchOp> {
    serde_json::from_value(patch).expect("a well-formed patch")
}

fn patched(doc: Value, patch: Value) -> Value {
    apply_patch(&doc, &ops(patch)).expect("patch applies")
}

/// The violation of an INVALID_PATCH error, as (field, description).
fn invalid_patch(doc: Value, patch: Value) -> (String, String) {
    match apply_patch(&doc, &ops(patch)) {
        Err(Error::InvalidArgument {
            reason: "INVALID_PATCH",
            violations,
            ..
        }) => {
            let [violation] = <[FieldViolation; 1]>::try_from(violations).expect("one violation");
            (violation.field, violation.description)
        }
        other => panic!("expected INVALID_PATCH, got {other:?}"),
    }
}

fn failed_test_message(doc: Value, patch: Value) -> String {
    match apply_patch(&doc, &ops(patch)) {
        Err(Error::FailedPrecondition {
            reason: "PATCH_TEST_FAILED",
            message,
            ..
        }) => message,
        other => panic!("expected PATCH_TEST_FAILED, got {other:?}"),
    }
}

#[test]
fn rfc_6902_appendix_a_examples_apply() {
    // A.1 adding an object member
    assert_eq!(
        patched(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz", "value": "qux"}])
        ),
        json!({"baz": "qux", "foo": "bar"})
    );
    // A.2 adding an array element
    assert_eq!(
        patched(
            json!({"foo": ["bar", "baz"]}),
            json!([{"op": "add", "path": "/foo/1", "value": "qux"}])
        ),
        json!({"foo": ["bar", "qux", "baz"]})
    );
    // A.3 removing an object member
    assert_eq!(
        patched(
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "remove", "path": "/baz"}])
        ),
        json!({"foo": "bar"})
    );
    // A.4 removing an array element
    assert_eq!(
        patched(
            json!({"foo": ["bar", "qux", "baz"]}),
            json!([{"op": "remove", "path": "/foo/1"}])
        ),
        json!({"foo": ["bar", "baz"]})
    );
    // A.5 replacing a value
    assert_eq!(
        patched(
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "replace", "path": "/baz", "value": "boo"}])
        ),
        json!({"baz": "boo", "foo": "bar"})
    );
    // A.6 moving a value
    assert_eq!(
        patched(
            json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
            json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}])
        ),
        json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})
    );
    // A.7 moving an array element
    assert_eq!(
        patched(
            json!({"foo": ["all", "grass", "cows", "eat"]}),
            json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}])
        ),
        json!({"foo": ["all", "cows", "eat", "grass"]})
    );
    // A.8 testing a value: success
    let doc = json!({"baz": "qux", "foo": ["a", 2, "c"]});
    let tests = json!([
        {"op": "test", "path": "/baz", "value": "qux"},
        {"op": "test", "path": "/foo/1", "value": 2}
    ]);
    assert_eq!(patched(doc.clone(), tests), doc);
    // A.10 adding a nested member object
    assert_eq!(
        patched(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}])
        ),
        json!({"foo": "bar", "child": {"grandchild": {}}})
    );
    // A.11 ignoring unrecognized elements
    assert_eq!(
        patched(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}])
        ),
        json!({"foo": "bar", "baz": "qux"})
    );
    // A.14 ~ escape ordering
    let doc = json!({"/": 9, "~1": 10});
    assert_eq!(
        patched(
            doc.clone(),
            json!([{"op": "test", "path": "/~01", "value": 10}])
        ),
        doc
    );
    // A.16 adding an array value
    assert_eq!(
        patched(
            json!({"foo": ["bar"]}),
            json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}])
        ),
        json!({"foo": ["bar", ["abc", "def"]]})
    );
}

#[test]
fn rfc_6902_appendix_a_errors_are_reported() {
    // A.9 testing a value: error
    let message = failed_test_message(
        json!({"baz": "qux"}),
        json!([{"op": "test", "path": "/baz", "value": "bar"}]),
    );
    assert_eq!(message, "json_patch[0]: test failed at /baz");
    // A.12 adding to a nonexistent target
    let (field, description) = invalid_patch(
        json!({"foo": "bar"}),
        json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
    );
    assert_eq!(field, "json_patch[0]");
    assert_eq!(description, r#"path "/baz" does not exist"#);
    // A.13 invalid JSON Patch document: a duplicated member
    let duplicated = r#"[{"op": "add", "path": "/baz", "value": "qux", "op": "remove"}]"#;
    let error = serde_json::from_str::<Vec<PatchOp>>(duplicated).unwrap_err();
    assert!(
        error.to_string().contains("duplicate field `op`"),
        "{error}"
    );
    // A.15 comparing strings and numbers
    failed_test_message(
        json!({"/": 9, "~1": 10}),
        json!([{"op": "test", "path": "/~01", "value": "10"}]),
    );
}

#[test]
fn a_failing_op_names_its_index_and_nothing_is_applied() {
    let doc = json!({"a": 1});
    let patch = json!([
        {"op": "add", "path": "/b", "value": 2},
        {"op": "remove", "path": "/missing"}
    ]);
    let (field, description) = invalid_patch(doc.clone(), patch);
    assert_eq!(field, "json_patch[1]");
    assert_eq!(description, r#"path "/missing" does not exist"#);
    let patch = json!([
        {"op": "replace", "path": "/a", "value": 5},
        {"op": "test", "path": "/a", "value": 1}
    ]);
    assert_eq!(
        failed_test_message(doc, patch),
        "json_patch[1]: test failed at /a"
    );
}

#[test]
fn malformed_pointers_are_invalid() {
    let doc = json!({"foo": [1, 2], "a": {"b": 1}});
    let cases = [
        (
            "foo",
            r#""foo" is not a JSON pointer: it must start with "/""#,
        ),
        (
            "/a/~2",
            r#""/a/~2" is not a JSON pointer: "~" must be followed by 0 or 1"#,
        ),
        (
            "/a/b~",
            r#""/a/b~" is not a JSON pointer: "~" must be followed by 0 or 1"#,
        ),
        ("/foo/01", r#""01" is not an array index"#),
        ("/foo/+1", r#""+1" is not an array index"#),
        ("/foo/", r#""" is not an array index"#),
        (
            "/foo/2",
            "array index 2 is out of range for an array of length 2",
        ),
        (
            "/foo/99999999999999999999999",
            "array index 99999999999999999999999 is out of range for an array of length 2",
        ),
        (
            "/foo/-",
            r#""-" names the position after the last element and only works with add"#,
        ),
        ("/a/b/c", r#"path "/a/b/c" does not exist"#),
    ];
    for (path, expected) in cases {
        let (field, description) = invalid_patch(
            doc.clone(),
            json!([{"op": "replace", "path": path, "value": 0}]),
        );
        assert_eq!(
            (field.as_str(), description.as_str()),
            ("json_patch[0]", expected),
            "{path}"
        );
    }
}

#[test]
fn add_respects_array_bounds_and_appends_at_the_end() {
    let doc = json!([1, 2]);
    assert_eq!(
        patched(
            doc.clone(),
            json!([{"op": "add", "path": "/2", "value": 3}])
        ),
        json!([1, 2, 3])
    );
    assert_eq!(
        patched(
            doc.clone(),
            json!([{"op": "add", "path": "/0", "value": 0}])
        ),
        json!([0, 1, 2])
    );
    let (_, description) = invalid_patch(doc, json!([{"op": "add", "path": "/3", "value": 3}]));
    assert_eq!(
        description,
        "array index 3 is out of range for an array of length 2"
    );
    let (_, description) = invalid_patch(
        json!({"a": 1}),
        json!([{"op": "add", "path": "/a/b", "value": 3}]),
    );
    assert_eq!(
        description,
        r#"cannot add "/a/b": "/a" is neither an object nor an array"#
    );
}

#[test]
fn missing_value_or_from_is_invalid_but_an_explicit_null_value_is_fine() {
    let doc = json!({"a": 1});
    for op in ["add", "replace", "test"] {
        let (_, description) = invalid_patch(doc.clone(), json!([{"op": op, "path": "/a"}]));
        assert_eq!(description, format!("\"{op}\" needs a \"value\""));
    }
    for op in ["move", "copy"] {
        let (_, description) = invalid_patch(doc.clone(), json!([{"op": op, "path": "/b"}]));
        assert_eq!(description, format!("\"{op}\" needs a \"from\""));
    }
    let null_op: Vec<PatchOp> =
        serde_json::from_str(r#"[{"op": "add", "path": "/b", "value": null}]"#).unwrap();
    assert_eq!(null_op[0].value, Some(Value::Null));
    assert_eq!(
        serde_json::to_value(&null_op).unwrap(),
        json!([{"op": "add", "path": "/b", "value": null}])
    );
    assert_eq!(
        apply_patch(&doc, &null_op).unwrap(),
        json!({"a": 1, "b": null})
    );
}

#[test]
fn move_rejects_a_move_into_its_own_child_but_allows_a_move_onto_itself() {
    let doc = json!({"a": {"b": {}}, "ab": 1});
    let (_, description) = invalid_patch(
        doc.clone(),
        json!([{"op": "move", "from": "/a", "path": "/a/b/c"}]),
    );
    assert_eq!(
        description,
        r#"cannot move "/a" into its own child "/a/b/c""#
    );
    // "/ab" merely shares a string prefix with "/a"; it is not a child.
    assert_eq!(
        patched(
            doc.clone(),
            json!([{"op": "move", "from": "/ab", "path": "/a/x"}])
        ),
        json!({"a": {"b": {}, "x": 1}})
    );
    assert_eq!(
        patched(
            doc.clone(),
            json!([{"op": "move", "from": "/a", "path": "/a"}])
        ),
        doc
    );
    assert_eq!(
        patched(
            doc.clone(),
            json!([{"op": "move", "from": "/a/b", "path": ""}])
        ),
        json!({})
    );
}

#[test]
fn copy_duplicates_and_root_ops_replace_the_document() {
    assert_eq!(
        patched(
            json!({"a": [1, {"x": 2}]}),
            json!([{"op": "copy", "from": "/a/1", "path": "/a/-"}])
        ),
        json!({"a": [1, {"x": 2}, {"x": 2}]})
    );
    assert_eq!(
        patched(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "", "value": [1]}])
        ),
        json!([1])
    );
    assert_eq!(
        patched(
            json!({"a": 1}),
            json!([{"op": "add", "path": "", "value": "s"}])
        ),
        json!("s")
    );
    let (_, description) = invalid_patch(json!({"a": 1}), json!([{"op": "remove", "path": ""}]));
    assert_eq!(description, "cannot remove the whole document");
}

#[test]
fn test_compares_by_json_value() {
    let doc = json!({"n": 1, "nested": {"list": [1.0, 2, {"k": -0.0}]}});
    let patch = json!([
        {"op": "test", "path": "/n", "value": 1.0},
        {"op": "test", "path": "/nested", "value": {"list": [1, 2.0, {"k": 0}]}},
        {"op": "test", "path": "", "value": doc.clone()}
    ]);
    assert_eq!(patched(doc.clone(), patch), doc);
    failed_test_message(
        doc.clone(),
        json!([{"op": "test", "path": "/n", "value": 1.5}]),
    );
    failed_test_message(
        doc.clone(),
        json!([{"op": "test", "path": "/nested/list", "value": [1, 2]}]),
    );
    // A test on a path that does not exist fails the test rather than the request.
    let message = failed_test_message(doc, json!([{"op": "test", "path": "/missing", "value": 1}]));
    assert_eq!(message, "json_patch[0]: test failed at /missing");
}

// --- diff -------------------------------------------------------------------------------

fn assert_diff_reproduces(from: &Value, to: &Value) -> Vec<PatchOp> {
    let ops = diff(from, to);
    let result = apply_patch(from, &ops)
        .unwrap_or_else(|e| panic!("diff of {from} -> {to} does not apply: {e:?}\n{ops:?}"));
    assert_eq!(&result, to, "diff of {from} -> {to} gave {ops:?}");
    ops
}

#[test]
fn identical_documents_diff_to_nothing() {
    let doc = json!({"a": [1, {"b": null}], "c": "d"});
    assert!(diff(&doc, &doc.clone()).is_empty());
    assert!(diff(&json!(null), &json!(null)).is_empty());
}

#[test]
fn a_changed_root_scalar_or_type_is_one_root_replace() {
    assert_eq!(
        assert_diff_reproduces(&json!(1), &json!("1")),
        ops(json!([{"op": "replace", "path": "", "value": "1"}]))
    );
    assert_eq!(
        assert_diff_reproduces(&json!({"a": 1}), &json!([1])),
        ops(json!([{"op": "replace", "path": "", "value": [1]}]))
    );
}

#[test]
fn objects_diff_removes_then_changes_then_adds_in_key_order() {
    let from = json!({"z": 1, "b": 1, "keep": {"x": 1}, "a/b": 1, "gone": 1, "c": {"d": 1}});
    let to = json!({"y": 2, "b": 1, "keep": {"x": 2}, "a/b": 2, "c": {"d": 1}, "new~": 3});
    assert_eq!(
        assert_diff_reproduces(&from, &to),
        ops(json!([
            {"op": "remove", "path": "/gone"},
            {"op": "remove", "path": "/z"},
            {"op": "replace", "path": "/a~1b", "value": 2},
            {"op": "replace", "path": "/keep/x", "value": 2},
            {"op": "add", "path": "/new~0", "value": 3},
            {"op": "add", "path": "/y", "value": 2}
        ]))
    );
}

#[test]
fn one_changed_nested_field_is_one_deep_replace() {
    let items: Vec<Value> = (0..50)
        .map(|i| json!({"id": i, "name": format!("n{i}")}))
        .collect();
    let from = json!({"spec": {"items": items}});
    let mut to = from.clone();
    to["spec"]["items"][17]["name"] = json!("renamed");
    assert_eq!(
        assert_diff_reproduces(&from, &to),
        ops(json!([{"op": "replace", "path": "/spec/items/17/name", "value": "renamed"}]))
    );
}

#[test]
fn inserting_at_the_front_or_removing_from_the_middle_of_a_long_array_is_one_op() {
    let from = Value::Array((0..1000).map(Value::from).collect());
    type Edit = fn(&mut Vec<Value>);
    let cases: [(Edit, Value); 2] = [
        (
            |items| items.insert(0, json!("first")),
            json!([{"op": "add", "path": "/0", "value": "first"}]),
        ),
        (
            |items| {
                items.remove(500);
            },
            json!([{"op": "remove", "path": "/500"}]),
        ),
    ];
    for (edit, expected) in cases {
        let mut to = from.clone();
        edit(to.as_array_mut().unwrap());
        assert_eq!(assert_diff_reproduces(&from, &to), ops(expected));
    }
}

#[test]
fn arrays_keep_their_longest_common_subsequence() {
    assert_eq!(
        assert_diff_reproduces(&json!([1, 2, 3, 4, 5]), &json!([1, 3, 4, 6, 5])),
        ops(json!([
            {"op": "remove", "path": "/1"},
            {"op": "add", "path": "/3", "value": 6}
        ]))
    );
    // Scattered edits on both sides of kept elements, with runs of unequal length.
    assert_eq!(
        assert_diff_reproduces(
            &json!(["k", 1, 2, 3, "m", 9]),
            &json!([0, "k", 7, "m", 8, 8])
        ),
        ops(json!([
            {"op": "add", "path": "/0", "value": 0},
            {"op": "replace", "path": "/2", "value": 7},
            {"op": "remove", "path": "/4"},
            {"op": "remove", "path": "/3"},
            {"op": "replace", "path": "/4", "value": 8},
            {"op": "add", "path": "/5", "value": 8}
        ]))
    );
}

#[test]
fn canonically_equal_but_differently_spelled_numbers_are_still_replaced() {
    assert_eq!(
        assert_diff_reproduces(&json!([0, 1, 2]), &json!([1.0, 2])),
        ops(json!([
            {"op": "remove", "path": "/0"},
            {"op": "replace", "path": "/0", "value": 1.0}
        ]))
    );
}

#[test]
fn huge_array_middles_fall_back_to_a_positional_diff() {
    let from = Value::Array((0..2500).map(Value::from).collect());
    let to = Value::Array((0..2500).rev().map(Value::from).collect());
    let ops = assert_diff_reproduces(&from, &to);
    // 2500 × 2500 exceeds the LCS budget: every position except the unchanged middle pair
    // swaps in place.
    assert_eq!(ops.len(), 2500);
    assert!(ops.iter().all(|op| op.op == PatchOpKind::Replace));
}

// --- property: apply(from, diff(from, to)) == to ----------------------------------------

/// SplitMix64: deterministic, so a failure reproduces from its iteration number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.below(choices.len())]
    }
}

const KEYS: &[&str] = &[
    "a", "b", "c", "", "~", "/", "a/b", "~1", "-", "0", "01", "é", "😀",
];

fn random_scalar(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(rng.below(7) as i64 - 3),
        3 => Value::from([0.5, 1.0, -2.25, 1e21, 1e-7, 3.0][rng.below(6)]),
        _ => Value::from(rng.pick(&["", "a", "b", "~", "/", "é", "😀", "a/b~c", "\n"])),
    }
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    if depth == 0 || rng.below(3) == 0 {
        return random_scalar(rng);
    }
    if rng.below(2) == 0 {
        let len = rng.below(6);
        Value::Array((0..len).map(|_| random_value(rng, depth - 1)).collect())
    } else {
        let len = rng.below(5);
        Value::Object(
            (0..len)
                .map(|_| (rng.pick(KEYS).to_owned(), random_value(rng, depth - 1)))
                .collect(),
        )
    }
}

/// A variation of `value` that shares most of its content, so array diffs find real
/// common subsequences rather than only whole replacements.
fn mutate(rng: &mut Rng, value: &Value, depth: usize) -> Value {
    if rng.below(8) == 0 {
        return random_value(rng, depth);
    }
    match value {
        Value::Array(items) => {
            let mut items = items.clone();
            for _ in 0..rng.below(4) {
                let len = items.len();
                match rng.below(5) {
                    0 => items.insert(
                        rng.below(len + 1),
                        random_value(rng, depth.saturating_sub(1)),
                    ),
                    1 if len > 0 => {
                        items.remove(rng.below(len));
                    }
                    2 if len > 0 => {
                        let at = rng.below(len);
                        items[at] = mutate(rng, &items[at], depth.saturating_sub(1));
                    }
                    3 if len > 0 => {
                        let copied = items[rng.below(len)].clone();
                        items.insert(rng.below(len + 1), copied);
                    }
                    4 if len > 1 => items.swap(rng.below(len), rng.below(len)),
                    _ => {}
                }
            }
            Value::Array(items)
        }
        Value::Object(map) => {
            let mut map = map.clone();
            for _ in 0..rng.below(4) {
                let key = rng.pick(KEYS).to_owned();
                match rng.below(3) {
                    0 => {
                        map.remove(&key);
                    }
                    1 => {
                        let changed = match map.get(&key) {
                            Some(old) => mutate(rng, old, depth.saturating_sub(1)),
                            None => random_value(rng, depth.saturating_sub(1)),
                        };
                        map.insert(key, changed);
                    }
                    _ => {
                        map.insert(key, random_value(rng, depth.saturating_sub(1)));
                    }
                }
            }
            Value::Object(map)
        }
        _ => random_scalar(rng),
    }
}

#[test]
fn diff_then_apply_reproduces_the_target_for_random_documents() {
    let mut rng = Rng(0x5eed);
    for iteration in 0..4000 {
        let from = random_value(&mut rng, 4);
        let to = if rng.below(5) == 0 {
            random_value(&mut rng, 4)
        } else {
            mutate(&mut rng, &from, 4)
        };
        let ops = diff(&from, &to);
        // Through the wire format too, where "value": null must survive.
        let wire: Vec<PatchOp> =
            serde_json::from_str(&serde_json::to_string(&ops).unwrap()).unwrap();
        assert_eq!(wire, ops, "iteration {iteration}");
        let result = apply_patch(&from, &wire)
            .unwrap_or_else(|e| panic!("iteration {iteration}: {from} -> {to}: {e:?}\n{ops:?}"));
        assert_eq!(result, to, "iteration {iteration}: {from} -> {to}\n{ops:?}");
        assert_eq!(
            diff(&from, &to),
            ops,
            "iteration {iteration}: diff is deterministic"
        );
        if from == to {
            assert!(ops.is_empty(), "iteration {iteration}");
        }
    }
}

#[test]
fn canonical_json_is_valid_json_and_a_fixed_point() {
    let mut rng = Rng(0xc0ffee);
    for iteration in 0..2000 {
        let value = random_value(&mut rng, 4);
        let canonical = canonical_json(&value);
        let reparsed: Value = serde_json::from_str(&canonical)
            .unwrap_or_else(|e| panic!("iteration {iteration}: {canonical}: {e}"));
        assert_eq!(
            canonical_json(&reparsed),
            canonical,
            "iteration {iteration}"
        );
        assert!(
            json_equal(&reparsed, &value),
            "iteration {iteration}: {canonical}"
        );
    }
}
