//! The Rust section of the repository README shows the code of examples/start_run.rs
//! and examples/worker.rs, word for word (dedented by one level).

#[test]
fn every_readme_snippet_is_code_the_example_runs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(dir.join("../../README.md")).unwrap();
    let examples = ["examples/start_run.rs", "examples/worker.rs"]
        .map(|file| std::fs::read_to_string(dir.join(file)).unwrap());
    let section = readme
        .split("\n### Rust\n")
        .nth(1)
        .expect("the README has a Rust section");
    let section = section.split("\n## ").next().unwrap();
    let snippets: Vec<&str> = section
        .split("```rust\n")
        .skip(1)
        .map(|s| s.split("```").next().unwrap())
        .collect();
    assert_eq!(
        snippets.len(),
        6,
        "connect, one call, stream a run; a worker, a handler, a stop"
    );
    for snippet in snippets {
        let indented: String = snippet
            .lines()
            .map(|l| {
                if l.is_empty() {
                    "\n".to_owned()
                } else {
                    format!("    {l}\n")
                }
            })
            .collect();
        assert!(
            examples.iter().any(|example| example.contains(&indented)),
            "README snippet not in examples/start_run.rs or examples/worker.rs:\n{snippet}"
        );
    }
}
