//! Retrieval end to end with all-MiniLM-L6-v2: an index of a small folder, searched three
//! ways, updated file by file, and the `files` tool's cited passages.

use kiln_assist::retrieval::{Index, SearchMode};
use kiln_assist::tools::files::Files;
use kiln_assist::Tool;
use kiln_model::embed::Embedder;
use std::fs;
use std::sync::Arc;

fn write_notes(dir: &std::path::Path) {
    fs::create_dir_all(dir.join("health")).unwrap();
    fs::write(
        dir.join("health/dentist.md"),
        "# Teeth\n\nCheck-up booked with Dr. Okafor for Tuesday 14 March at 3 pm.\nBring the insurance card.\n",
    )
    .unwrap();
    fs::write(dir.join("car.txt"), "The car goes to the garage for its annual service on 2 May.\nOil and brakes.\n")
        .unwrap();
    fs::write(
        dir.join("recipes.html"),
        "<html><body>\n<h1>Pancakes</h1>\n<p>Whisk 200 g flour, two eggs and 300 ml milk.</p>\n<script>track()</script>\n</body></html>\n",
    )
    .unwrap();
}

#[test]
fn an_index_finds_cites_and_updates_file_by_file() {
    let Some(model) = kiln_test_models::MINILM.path() else { return };
    let embedder = Embedder::open(&model).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (notes, store) = (tmp.path().join("notes"), tmp.path().join("index"));
    write_notes(&notes);
    let (index, report) = Index::update(&notes, &store, &embedder, "minilm", |_| {}).unwrap();
    assert_eq!((report.added, report.changed, report.removed, report.unchanged), (3, 0, 0, 0));
    assert_eq!(index.len(), 3, "one passage per short file, a heading kept with its paragraph");

    // Vector search bridges words the note does not use ("appointment" vs "check-up").
    let hits = index.search("when is my dental appointment", SearchMode::Vector, 2, Some(&embedder)).unwrap();
    assert_eq!(hits[0].file, "health/dentist.md", "{hits:?}");
    assert_eq!(hits[0].location(), "health/dentist.md:1-4");
    let hits = index.search("pancake flour", SearchMode::Keyword, 1, None).unwrap();
    assert_eq!(hits[0].file, "recipes.html");
    assert!(!hits[0].text.contains("track()") && !hits[0].text.contains('<'), "{:?}", hits[0].text);
    let hits = index.search("garage service date", SearchMode::Hybrid, 3, Some(&embedder)).unwrap();
    assert_eq!(hits[0].location(), "car.txt:1-2");
    assert!(index.search("x", SearchMode::Vector, 1, None).is_err(), "vector search needs the model");

    // Loaded back as it was written.
    let loaded = Index::load(&store).unwrap().unwrap();
    assert_eq!(loaded.len(), index.len());

    // One file changes, one goes, one is new: only those are read again.
    fs::write(notes.join("car.txt"), "Garage: the car's service moved to 9 May.\n").unwrap();
    fs::remove_file(notes.join("recipes.html")).unwrap();
    fs::write(notes.join("plants.md"), "Water the fern every Sunday.\n").unwrap();
    let mut read = Vec::new();
    let (index, report) = Index::update(&notes, &store, &embedder, "minilm", |f| read.push(f.to_string())).unwrap();
    assert_eq!((report.added, report.changed, report.removed, report.unchanged), (1, 1, 1, 1));
    assert_eq!(read, ["car.txt", "plants.md"]);
    let hits = index.search("car service", SearchMode::Hybrid, 1, Some(&embedder)).unwrap();
    assert!(hits[0].text.contains("9 May"), "{hits:?}");

    // An index made with another embedding model is rebuilt rather than mixed.
    let (_, report) = Index::update(&notes, &store, &embedder, "other-model", |_| {}).unwrap();
    assert_eq!((report.added, report.unchanged), (3, 0));

    // The tool answers with passages headed by file and lines.
    let tool = Files::new(index, Arc::new(embedder));
    let out = tool.call(&serde_json::json!({"query": "fern watering"})).unwrap();
    assert!(out.starts_with("[plants.md:1]\nWater the fern"), "{out}");
    assert!(tool.call(&serde_json::json!({"query": ""})).is_err());
}

#[test]
fn a_broken_index_file_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("index.json"), b"{not json").unwrap();
    let err = Index::load(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("kiln index") && err.contains("unreadable"), "{err}");
    assert!(Index::load(&tmp.path().join("none")).unwrap().is_none());
}
