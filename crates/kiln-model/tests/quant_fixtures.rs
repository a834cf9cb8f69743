//! kiln's quantized kernels against numbers recorded from llama.cpp's reference code, stored in
//! tests/fixtures/quant/ by make_fixtures.py (see its header for the command):
//! dequantization of all 13 weight types and quantization to Q4_0 … Q8_0 against gguf-py; the
//! Q8 activation quantizers, the K-type quantizers and the scalar dot products against ggml's
//! C code. Every comparison is of f32 bits or bytes: exact.

use std::path::PathBuf;

use kiln_model::quant::{dequantize_row, quantize_row, reference, vec_dot, vec_dot_type};
use kiln_model::GgmlType;

/// The fixture names of the 13 weight types.
const WEIGHT_TYPES: [&str; 13] =
    ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"];

/// How far the dispatched (possibly SIMD) dot product may drift from ggml's scalar one,
/// relative to the sum of |w_i a_i|: reordering f32 additions only.
const SIMD_REL_TOL: f64 = 1e-5;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn ty(name: &str) -> GgmlType {
    GgmlType::from_name(name).unwrap_or_else(|| panic!("unknown type {name}"))
}

/// Asserts two f32 slices are bit-identical, naming the first difference.
fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: value {i} is {} ({:#010x}), ggml gives {} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

fn dequant(t: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / t.type_size() * t.block_size();
    let mut out = vec![0f32; n];
    dequantize_row(t, bytes, &mut out);
    out
}

#[test]
fn dequantization_is_bit_exact_for_all_weight_types() {
    for name in WEIGHT_TYPES {
        let want = f32s(&fixture(&format!("dequant_{name}.f32")));
        let got = dequant(ty(name), &fixture(&format!("dequant_{name}.bin")));
        assert_bits_eq(&format!("dequantize {name}"), &got, &want);
    }
}

/// Quantizes the `.f32` input of a fixture pair with the dispatched and the scalar quantizer
/// and compares both with its `.bin`.
fn check_quantize(prefix: &str, name: &str) {
    let x = f32s(&fixture(&format!("{prefix}_{name}.f32")));
    let want = fixture(&format!("{prefix}_{name}.bin"));
    let t = ty(name);
    for (path, quantize) in [("dispatch", quantize_row as fn(_, &_, &mut _) -> _), ("scalar", reference::quantize_row)]
    {
        let mut got = vec![0u8; t.bytes_for(x.len()).expect("whole blocks")];
        quantize(t, &x, &mut got).unwrap();
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            let block = i / t.type_size();
            panic!(
                "quantize {name} ({prefix}, {path}): byte {i} (block {block}) is {:#04x}, expected {:#04x}",
                got[i], want[i]
            );
        }
    }
}

#[test]
fn weight_quantization_matches_gguf_py() {
    for name in ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"] {
        check_quantize("quant", name);
    }
}

#[test]
fn activation_quantization_matches_ggml_reference() {
    for name in ["q8_0", "q8_1", "q8_k"] {
        check_quantize("ggml_quant", name);
    }
}

#[test]
fn k_quantization_matches_ggml_reference() {
    for name in ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] {
        check_quantize("ggml_quant", name);
    }
}

#[test]
fn quantized_dot_is_bit_exact_with_ggml_generic() {
    for name in ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] {
        let t = ty(name);
        let w = fixture(&format!("dequant_{name}.bin"));
        let a = fixture(&format!("ggml_dot_{name}.a"));
        let want = f32s(&fixture(&format!("ggml_dot_{name}.f32")))[0];
        let n = w.len() / t.type_size() * t.block_size();
        let got = reference::vec_dot(t, n, &w, &a);
        assert_bits_eq(&format!("vec_dot {name}"), &[got], &[want]);

        // The dispatched kernel (AVX2 where the CPU has it) reorders f32 sums only.
        let fast = vec_dot(t, n, &w, &a) as f64;
        let mag: f64 =
            dequant(t, &w).iter().zip(dequant(vec_dot_type(t), &a)).map(|(&x, y)| (x as f64 * y as f64).abs()).sum();
        assert!(
            (fast - want as f64).abs() <= SIMD_REL_TOL * mag,
            "vec_dot {name}: dispatched {fast}, ggml {want} (sum |terms| {mag})"
        );
    }
}
