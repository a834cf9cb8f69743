use super::*;

fn sample() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("llama.block_count", Value::U32(2));
    w.set("x.f", Value::F32(1.5));
    w.set("x.arr", Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]));
    w.set("x.nested", Value::Array(vec![Value::Array(vec![Value::I64(-3)])]));
    w.set("x.b", Value::Bool(true));
    w.add_tensor(TensorData { name: "a".into(), dims: vec![3], ty: GgmlType::F32, data: vec![0u8; 12] });
    w.add_tensor(TensorData { name: "b".into(), dims: vec![32, 2], ty: GgmlType::Q8_0, data: vec![7u8; 68] });
    // Last, and a multiple of the alignment, so that the file ends where its data does.
    w.add_tensor(TensorData { name: "c".into(), dims: vec![8], ty: GgmlType::F32, data: vec![1u8; 32] });
    let mut out = Vec::new();
    w.write(&mut out).unwrap();
    out
}

#[test]
fn round_trip() {
    let f = GgufFile::from_vec(sample()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.get("general.architecture").unwrap().as_str(), Some("llama"));
    assert_eq!(f.get("llama.block_count").unwrap().as_u64(), Some(2));
    assert_eq!(f.get("x.f").unwrap().as_f64(), Some(1.5));
    assert_eq!(f.get("x.arr").unwrap().as_array().unwrap().len(), 2);
    assert_eq!(f.get("x.b").unwrap().as_bool(), Some(true));
    let b = f.tensor("b").unwrap();
    assert_eq!(b.ty, GgmlType::Q8_0);
    assert_eq!(b.offset % 32, 0);
    assert_eq!(f.tensor_data(b), &[7u8; 68][..]);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = sample();
    for n in 0..full.len() {
        let r = GgufFile::from_vec(full[..n].to_vec());
        assert!(r.is_err(), "prefix of {n} bytes was accepted");
    }
}

#[test]
fn bad_magic_and_version() {
    let mut b = sample();
    b[0] = b'X';
    assert!(matches!(GgufFile::from_vec(b), Err(GgufError::BadMagic(_))));
    let mut b = sample();
    b[4] = 1;
    assert!(matches!(GgufFile::from_vec(b), Err(GgufError::Version(1))));
}

#[test]
fn unknown_tensor_type_names_the_tensor() {
    let mut w = GgufWriter::new();
    w.add_tensor(TensorData { name: "t".into(), dims: vec![1], ty: GgmlType::F32, data: vec![0; 4] });
    let mut b = Vec::new();
    w.write(&mut b).unwrap();
    // The type id sits just before the final u64 offset of the only tensor info.
    let pos = 4 + 4 + 8 + 8 + (8 + 1) + 4 + 8;
    b[pos..pos + 4].copy_from_slice(&99u32.to_le_bytes());
    let err = GgufFile::from_vec(b).err().unwrap().to_string();
    assert!(err.contains("\"t\"") && err.contains("99"), "{err}");
}

/// Flips bytes all over a valid file: every outcome must be Ok or Err, never a panic.
#[test]
fn mutated_files_never_panic() {
    let full = sample();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut b = full.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        let _ = GgufFile::from_vec(b);
    }
}
