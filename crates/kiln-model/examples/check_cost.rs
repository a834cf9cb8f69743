//! What a pass of R tokens costs against a pass of one, after a 200-token prompt: the price
//! of checking R − 1 guessed tokens in speculative decoding (all rows' logits, as a check
//! needs). `cargo run --release -p kiln-model --example check_cost -- MODEL.gguf [R]`
//! (with R: only that size, 600 times, for a profiler).

use kiln_model::Model;
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let only: Option<usize> = std::env::args().nth(2).map(|s| s.parse().unwrap());
    let model = Model::open_gguf(&path).unwrap();
    let prompt: Vec<u32> = (0..200).map(|i| 100 + i * 7).collect();
    let cases: Vec<(usize, bool)> = match only {
        Some(r) => vec![(r, true)],
        None => vec![(1, false), (4, true), (8, true), (9, true), (12, true), (16, true)],
    };
    for &(rows, all) in &cases {
        let mut st = model.new_state(1024);
        model.forward(&mut st, &prompt, false).unwrap();
        let toks: Vec<u32> = (0..rows as u32).map(|i| 500 + i).collect();
        let n = if only.is_some() { 600 } else { 80 };
        let mut times = Vec::new();
        for _ in 0..n {
            st.cache.truncate(200);
            let t = Instant::now();
            model.forward(&mut st, &toks, all).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("rows {rows} all_logits {all}: min {:.2} ms median {:.2} ms", times[0], times[n / 2]);
    }
}
