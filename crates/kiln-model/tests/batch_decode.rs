//! Continuous batching must not change answers: a sequence decoded beside others gets the same
//! logits, bit for bit, as when it runs alone.

use kiln_model::{BatchState, Model};
use kiln_test_models::{TestModel, GEMMA3, SMOLLM2};

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

// `step` indexes the per-sequence logs of the alone runs, not one slice.
#[allow(clippy::needless_range_loop)]
fn check(test_model: &TestModel) {
    let Some(path) = test_model.path() else { return };
    let model = Model::open_gguf(&path).unwrap();
    let vocab = model.config.vocab_size;
    // Different prompt lengths, so the sequences sit at different positions.
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4, 5, 6, 7], vec![100, 200], (10..90).collect(), vec![42]];

    // Alone: prefill then greedy decode with `forward`, one token at a time.
    let steps = 12;
    let mut alone: Vec<Vec<Vec<f32>>> = Vec::new();
    for p in &prompts {
        let mut state = model.new_state(256);
        let mut next = argmax(model.forward(&mut state, p, false).unwrap());
        let mut rows = Vec::new();
        for _ in 0..steps {
            let logits = model.forward(&mut state, &[next], false).unwrap().to_vec();
            next = argmax(&logits);
            rows.push(logits);
        }
        alone.push(rows);
    }

    // Together: the same prefill, then every step decodes all sequences in one pass.
    let mut states: Vec<_> = prompts.iter().map(|_| model.new_state(256)).collect();
    let mut next: Vec<u32> =
        prompts.iter().zip(&mut states).map(|(p, s)| argmax(model.forward(s, p, false).unwrap())).collect();
    let mut batch = BatchState::default();
    for step in 0..steps {
        let mut refs: Vec<_> = states.iter_mut().collect();
        let logits = model.decode_batch(&mut batch, &mut refs, &next).unwrap();
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            assert!(row == alone[i][step].as_slice(), "sequence {i} step {step}: batched logits differ from alone");
            next[i] = argmax(row);
        }
    }
    for (s, p) in states.iter().zip(&prompts) {
        assert_eq!(s.len(), p.len() + steps);
    }
}

#[test]
fn batched_decode_equals_alone_smollm2() {
    check(&SMOLLM2);
}

#[test]
fn batched_decode_equals_alone_gemma3() {
    check(&GEMMA3);
}

#[test]
fn batch_rejects_a_full_context_without_touching_the_others() {
    let Some(path) = SMOLLM2.path() else { return };
    let model = Model::open_gguf(&path).unwrap();
    let mut full = model.new_state(2);
    model.forward(&mut full, &[1, 2], false).unwrap();
    let mut ok = model.new_state(8);
    model.forward(&mut ok, &[1], false).unwrap();
    let mut batch = BatchState::default();
    let err = model.decode_batch(&mut batch, &mut [&mut ok, &mut full], &[5, 6]).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    assert_eq!(ok.len(), 1, "a failed batch must not advance any sequence");
}

#[test]
fn hidden_states_are_causal_rows() {
    let Some(path) = SMOLLM2.path() else { return };
    let model = Model::open_gguf(&path).unwrap();
    let mut state = model.new_state(64);
    let d = model.config.dim;
    let h = model.hidden_states(&mut state, &[1, 2, 3]).unwrap();
    assert_eq!(h.len(), 3 * d);
    assert!(h.iter().all(|v| v.is_finite()));
    // Causal: a prefix's rows do not depend on what follows it.
    let prefix = model.hidden_states(&mut state, &[1, 2]).unwrap();
    assert_eq!(prefix.as_slice(), &h[..2 * d]);
    assert!(h[2 * d..] != h[d..2 * d]);
}

#[test]
fn several_sequences_in_one_pass_equal_each_alone() {
    let Some(path) = SMOLLM2.path() else { return };
    let model = Model::open_gguf(&path).unwrap();
    let vocab = model.config.vocab_size;
    let prefix: Vec<u32> = (20..60).collect();
    let mut base = model.new_state(256);
    model.forward(&mut base, &prefix, false).unwrap();
    // Continuations of four or more tokens take the same kernels alone and together.
    let conts: Vec<Vec<u32>> = vec![vec![5, 6, 7, 8], (100..130).collect(), vec![9, 9, 9, 9, 9], (300..340).collect()];
    let alone: Vec<Vec<f32>> = conts
        .iter()
        .map(|c| {
            let mut s = model.new_state(256);
            s.cache.copy_prefix_from(&base.cache, prefix.len());
            model.forward(&mut s, c, true).unwrap().to_vec()
        })
        .collect();
    let mut states: Vec<_> = conts.iter().map(|_| model.new_state(256)).collect();
    for s in &mut states {
        s.cache.copy_prefix_from(&base.cache, prefix.len());
    }
    let mut refs: Vec<_> = states.iter_mut().collect();
    let tokens: Vec<&[u32]> = conts.iter().map(|c| c.as_slice()).collect();
    let mut batch = BatchState::default();
    // 79 rows: two passes (4 + 30 + 5 = 39 fit in 64, then 40).
    let together = model.forward_many(&mut batch, &mut refs, &tokens).unwrap();
    let mut at = 0;
    for (i, c) in conts.iter().enumerate() {
        let rows = &together[at * vocab..(at + c.len()) * vocab];
        assert!(rows == alone[i].as_slice(), "continuation {i} differs in one pass with others");
        at += c.len();
    }
    for (s, c) in states.iter().zip(&conts) {
        assert_eq!(s.len(), prefix.len() + c.len());
    }
}
