//! Helpers shared by kiln-train's integration tests.

use candle_core::{DType, Device, Tensor};
use kiln_train::model::Transformer;
use kiln_train::rng::Rng;

/// Central differences in f64 with step 1e-5 are accurate to ~1e-9; a wrong backward rule is
/// off by O(gradient).
const GRAD_ABS_TOL: f64 = 1e-7;
const GRAD_REL_TOL: f64 = 1e-5;

/// The loss as an f64.
pub fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Checks `samples` random entries of every parameter's gradient (the loss on two rows of seven
/// random tokens below `vocab`) against central finite differences. `label` names the model in
/// a failure. `model` must be f64.
pub fn assert_gradients_match_finite_differences(model: &Transformer, vocab: u64, samples: usize, label: &str) {
    let mut rng = Rng::new(5);
    let ids: Vec<u32> = (0..2 * 7).map(|_| rng.below(vocab) as u32).collect();
    let targets: Vec<u32> = (0..2 * 7).map(|_| rng.below(vocab) as u32).collect();
    let x = Tensor::from_vec(ids, (2, 7), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(targets, (2, 7), &Device::Cpu).unwrap();
    let grads = model.loss(&x, &y).unwrap().backward().unwrap();
    for (name, var) in model.params() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{label} {name}: no gradient"));
        let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let w0 = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let shape = var.as_tensor().shape().clone();
        for _ in 0..samples {
            let i = rng.below(w0.len() as u64) as usize;
            let h = 1e-5;
            let at = |delta: f64| {
                let mut w = w0.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, &shape, &Device::Cpu).unwrap()).unwrap();
                scalar(&model.loss(&x, &y).unwrap())
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(w0.clone(), &shape, &Device::Cpu).unwrap()).unwrap();
            let tol = GRAD_ABS_TOL + GRAD_REL_TOL * numeric.abs();
            assert!(
                (numeric - g[i]).abs() <= tol,
                "{label} {name}[{i}]: backprop {} vs finite differences {numeric}",
                g[i]
            );
        }
    }
}

/// `kiln export`'s GGUF path: the Hugging Face directory `hf` as a GGUF of type `ty` at `out`.
#[allow(dead_code)] // not every test binary exports
pub fn export_gguf(
    hf: &std::path::Path,
    ty: kiln_gguf::GgmlType,
    out: &std::path::Path,
) -> Result<kiln_model::formats::gguf_export::ExportReport, String> {
    let tokenizer = kiln_text::gguf_tokenizer_metadata(hf).map_err(|e| e.to_string())?;
    kiln_model::formats::export_gguf(hf, ty, out, &tokenizer, |_, _| {}).map_err(|e| e.to_string())
}
