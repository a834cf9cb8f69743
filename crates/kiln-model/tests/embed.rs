//! all-MiniLM-L6-v2 in kiln against sentence-transformers: the same token ids and vectors
//! with cosine ≥ 0.999 on texts recorded by tests/embeddings/make_minilm_fixture.py
//! (fixture: tests/fixtures/embeddings/).

use kiln_model::embed::{cosine, Embedder, Pooling};
use kiln_test_models::MINILM;

#[derive(serde::Deserialize)]
struct Fixture {
    max_seq_length: usize,
    texts: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn fixture() -> Fixture {
    let path = kiln_test_models::fixture("embeddings/minilm_sentence_transformers.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn minilm_matches_sentence_transformers() {
    let Some(dir) = MINILM.path() else { return };
    let embedder = Embedder::open(&dir).unwrap();
    let f = fixture();
    assert_eq!(embedder.max_tokens, f.max_seq_length);
    assert_eq!((embedder.pooling, embedder.normalize, embedder.dim()), (Pooling::Mean, true, 384));
    for (i, text) in f.texts.iter().enumerate() {
        assert_eq!(embedder.tokenize(text).unwrap(), f.token_ids[i], "token ids of text {i}");
    }
    let texts: Vec<&str> = f.texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed_all(&texts).unwrap();
    for (i, (ours, theirs)) in vectors.iter().zip(&f.embeddings).enumerate() {
        let c = cosine(ours, theirs);
        let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("text {i}: cosine {c:.7}, largest difference {worst:.2e}");
        assert!(c >= 0.999, "text {i}: cosine {c} with sentence-transformers");
        assert!(worst < 1e-5, "text {i}: an element differs by {worst}");
    }
    // Similar sentences are closer than unrelated ones.
    assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[5]));
}

#[test]
fn a_directory_that_is_not_an_encoder_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Embedder::open(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(tmp.path().join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let err = Embedder::open(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("not a BERT encoder"), "{err}");
}
