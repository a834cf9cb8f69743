//! Greedy continuation of a list of token ids: `cargo run --release --example greedy -- MODEL.gguf N ID ID …`.
//! A debugging aid for comparing against llama.cpp without the tokenizer in the loop.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = kiln_model::Model::open_gguf(&args[1])?;
    let n: usize = args[2].parse()?;
    let mut ids: Vec<u32> = args[3..].iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let mut state = model.new_state(512);
    let t = std::time::Instant::now();
    let mut logits = model.forward(&mut state, &ids, false)?.to_vec();
    for _ in 0..n {
        let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
        ids.push(next);
        let max = logits[next as usize];
        let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
        print!("{next}({:.4}) ", 1.0 / sum);
        logits = model.forward(&mut state, &[next], false)?.to_vec();
    }
    println!();
    eprintln!("{:.2?}", t.elapsed());
    Ok(())
}
