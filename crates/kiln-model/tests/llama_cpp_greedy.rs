//! Greedy continuations equal llama.cpp's, token for token, for the prompts recorded in
//! `tests/fixtures/reference/greedy-*.json` (see the README there for the command).
//!
//! Two engines that round differently can part ways where the model itself hesitates: on these
//! 4-bit models a change in the rounding of one activation, or the order of a SIMD sum, moves
//! a probability by a few hundredths. So at the first differing token llama.cpp's own top-2 probabilities must be a
//! near-tie (closer than `NEAR_TIE`), and that case is only compared up to there; any other
//! difference fails. The probabilities of the matched tokens must agree too.

use kiln_model::Model;
use kiln_test_models::{reference_fixtures, TestModel, GEMMA3, SMOLLM2};
use serde_json::Value;

/// Largest gap between llama.cpp's top-2 probabilities at which a differing token is accepted.
/// Measured: kiln's probability of a matched token differs from llama.cpp's by about 0.015 on
/// average and up to 0.09 (summation order inside SIMD kernels moves them that much on these
/// 4-bit models), so a gap below 0.1 is within reach of rounding alone.
const NEAR_TIE: f64 = 0.1;
/// Fewest tokens, over all cases of a model, that must match before the first tie.
const MIN_MATCHED_FRACTION: f64 = 0.5;
/// Largest mean difference between our probability of each matched token and llama.cpp's.
const MAX_MEAN_PROB_ERROR: f64 = 0.03;

/// Greedy tokens, and the probability of each chosen token.
fn greedy(model: &Model, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f64>) {
    let mut state = model.new_state(prompt.len() + n + 1);
    let mut logits = model.forward(&mut state, prompt, false).unwrap().to_vec();
    let (mut out, mut probs) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (next, max) =
            logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &l)| if l > b.1 { (i, l) } else { b });
        let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        out.push(next as u32);
        probs.push(1.0 / sum);
        logits.copy_from_slice(model.forward(&mut state, &[next as u32], false).unwrap());
    }
    (out, probs)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check(which: &TestModel) {
    let Some(path) = which.path() else { return };
    let fixture = reference_fixtures().join(format!("greedy-{}.json", which.key));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let model = Model::open_gguf(&path).unwrap();
    let (mut matched, mut total) = (0usize, 0usize);
    let mut prob_err = Vec::new();
    for case in json["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let expected = ids(&case["ids"]);
        let (ours, probs) = greedy(&model, &prompt, expected.len());
        total += expected.len();
        let same = ours.iter().zip(&expected).take_while(|(a, b)| a == b).count();
        for (i, p) in probs.iter().enumerate().take(same) {
            if let Some(theirs) = case["top2"][i][0][1].as_f64() {
                prob_err.push((p - theirs).abs());
            }
        }
        matched += same;
        if same < expected.len() {
            let top2 = &case["top2"][same];
            let gap = top2[0][1].as_f64().unwrap() - top2[1][1].as_f64().unwrap();
            assert!(
                gap < NEAR_TIE,
                "{:?}: token {same} is {} but llama.cpp gives {} with top-2 {top2} (gap {gap:.4} is no near-tie)",
                case["prompt"].as_str().unwrap(),
                ours[same],
                expected[same]
            );
            eprintln!(
                "{:?}: near-tie at token {same} (gap {gap:.4}), compared up to there",
                case["prompt"].as_str().unwrap()
            );
        }
    }
    let fraction = matched as f64 / total as f64;
    prob_err.sort_by(f64::total_cmp);
    let mean_err = prob_err.iter().sum::<f64>() / prob_err.len() as f64;
    eprintln!(
        "{}: |p_kiln - p_llama.cpp| of the chosen token: mean {mean_err:.4}, median {:.4}, max {:.4}",
        which.key,
        prob_err[prob_err.len() / 2],
        prob_err[prob_err.len() - 1]
    );
    eprintln!("{}: {matched}/{total} tokens equal to llama.cpp", which.key);
    assert!(mean_err <= MAX_MEAN_PROB_ERROR, "probabilities differ from llama.cpp's by {mean_err:.4} on average");
    assert!(fraction >= MIN_MATCHED_FRACTION, "only {matched} of {total} tokens matched before a tie");
}

#[test]
fn smollm2_greedy_tokens_equal_llama_cpp() {
    check(&SMOLLM2);
}

#[test]
fn gemma3_greedy_tokens_equal_llama_cpp() {
    check(&GEMMA3);
}
