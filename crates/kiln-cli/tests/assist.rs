//! The assistant's commands as a user types them: `kiln index` / `kiln search` over a folder,
//! `kiln embed`, and `kiln chat --tools` with its calls shown.

// Shared helpers; this file uses only some of them.
#[allow(dead_code)]
mod util;

use kiln_test_models::{MINILM, SMOLLM2};
use std::fs;
use util::{temp_dir, Kiln};

#[test]
fn index_then_search_cites_file_and_lines() {
    let Some(minilm) = MINILM.path() else { return };
    let home = temp_dir();
    let notes = home.path().join("notes");
    fs::create_dir_all(&notes).unwrap();
    fs::write(notes.join("dentist.md"), "# Dentist\n\nCheck-up with Dr. Okafor on Tuesday at 3 pm.\n").unwrap();
    fs::write(notes.join("garden.txt"), "Prune the roses in March.\nWater the fern on Sundays.\n").unwrap();
    let model = ["--embedding-model", minilm.to_str().unwrap()];

    let out = Kiln::new(home.path()).args(["search"]).arg(&notes).args(["dentist"]).args(model).run();
    assert!(out.error_line(None).contains("kiln index"), "{out:?}");

    let out = Kiln::new(home.path()).args(["index"]).arg(&notes).args(model).run();
    out.success();
    assert!(out.stderr.contains("2 passages; 2 files added"), "{out:?}");
    let out = Kiln::new(home.path())
        .args(["search"])
        .arg(&notes)
        .args(["when do I see the dentist", "-k", "1"])
        .args(model)
        .run();
    out.success();
    assert!(out.stdout.starts_with("dentist.md:1-3"), "{out:?}");
    let out = Kiln::new(home.path())
        .args(["search"])
        .arg(&notes)
        .args(["fern", "--mode", "keyword", "--json", "-k", "1"])
        .run();
    let hit: serde_json::Value = serde_json::from_str(out.success().stdout.trim()).unwrap();
    assert_eq!((hit["file"].as_str(), hit["start_line"].as_u64()), (Some("garden.txt"), Some(1)));

    // A second index run reads nothing again.
    let out = Kiln::new(home.path()).args(["index"]).arg(&notes).args(model).run();
    assert!(out.success().stderr.contains("0 files added, 0 changed, 0 removed, 2 unchanged"), "{out:?}");
    let out = Kiln::new(home.path()).args(["index"]).arg(home.path().join("absent")).run();
    assert!(out.error_line(None).contains("is not a folder"), "{out:?}");
    let out = Kiln::new(home.path()).args(["search"]).arg(&notes).args(["x", "--mode", "fuzzy"]).run();
    assert!(out.no_panic().stderr.contains("keyword, vector or hybrid"), "{out:?}");
}

#[test]
fn embed_prints_one_unit_vector_per_text() {
    let Some(minilm) = MINILM.path() else { return };
    let home = temp_dir();
    let out = Kiln::new(home.path()).args(["embed", "one", "two", "--embedding-model"]).arg(&minilm).run();
    let lines: Vec<Vec<f64>> = out.success().stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for v in lines {
        assert_eq!(v.len(), 384);
        assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-5);
    }
    let out = Kiln::new(home.path()).args(["embed", "x", "--embedding-model"]).arg(home.path()).run();
    assert!(out.error_line(None).contains("config.json"), "{out:?}");
}

#[test]
fn chat_with_tools_shows_each_call_and_keeps_the_conversation() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let out = Kiln::new(home.path())
        .args(["chat", "--tools", "calc", "--tool-choice", "required", "--temp", "0", "--max-tokens", "40", "-m"])
        .arg(&model)
        .stdin("What is 48713 times 127?\n/show\n")
        .run();
    out.success();
    assert!(out.stderr.contains("→ calc({\"expression\": "), "{out:?}");
    assert!(out.stderr.contains("← "), "{out:?}");
    // user, assistant call, tool result, answer.
    assert!(out.stderr.contains("messages: 4"), "{out:?}");
    let out = Kiln::new(home.path()).args(["chat", "--tools", "files", "-m"]).arg(&model).stdin("hi\n").run();
    assert!(out.error_line(None).contains("--files DIR"), "{out:?}");
}

#[test]
fn an_assistant_profile_supplies_model_instructions_and_tools() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let out = Kiln::new(home.path())
        .args([
            "assistant",
            "create",
            "tutor",
            "--instructions",
            "Be brief.",
            "--tools",
            "calc",
            "--temp",
            "0",
            "-n",
            "40",
            "-m",
        ])
        .arg(&model)
        .run();
    assert!(out.success().stdout.contains("assistants/tutor.json"), "{out:?}");
    let out = Kiln::new(home.path()).args(["assistant", "create", "tutor"]).run();
    assert!(out.error_line(None).contains("--force"), "{out:?}");
    let out = Kiln::new(home.path()).args(["assistant", "create", "x", "--tools", "files"]).run();
    assert!(out.error_line(None).contains("--files DIR"), "{out:?}");
    let out = Kiln::new(home.path()).args(["assistant", "list"]).run();
    assert!(out.success().stdout.starts_with("tutor "), "{out:?}");
    let out = Kiln::new(home.path())
        .args(["run", "--assistant", "tutor", "--tool-choice", "required", "What is 48713 times 127?"])
        .run();
    assert!(out.success().stderr.contains("→ calc("), "the profile's tool is offered: {out:?}");
    // Greedy (the profile's temperature): the same answer twice.
    let again = Kiln::new(home.path())
        .args(["run", "--assistant", "tutor", "--tool-choice", "required", "What is 48713 times 127?"])
        .run();
    assert_eq!(out.stdout, again.stdout);
    let out = Kiln::new(home.path()).args(["run", "--assistant", "nobody", "hi"]).run();
    assert!(out.error_line(None).contains("no assistant named \"nobody\""), "{out:?}");
    Kiln::new(home.path()).args(["assistant", "rm", "tutor"]).run().success();
    assert!(Kiln::new(home.path()).args(["assistant", "list"]).run().success().stdout.is_empty());
}

#[test]
fn bench_measures_decoding_under_a_schema() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let schema = kiln_test_models::repo_root().join("bench/constrained/person.json");
    let out = Kiln::new(home.path())
        .args(["bench", "-n", "8", "-r", "1", "--json-schema"])
        .arg(&schema)
        .arg("-m")
        .arg(&model)
        .run();
    assert!(out.success().stdout.contains("cost of the schema"), "{out:?}");
    let bad = home.path().join("bad.json");
    fs::write(&bad, r##"{"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}, "required": ["a"]}"##).unwrap();
    let out = Kiln::new(home.path())
        .args(["bench", "-n", "8", "-r", "1", "--json-schema"])
        .arg(&bad)
        .arg("-m")
        .arg(&model)
        .run();
    out.error_line(None);
}
