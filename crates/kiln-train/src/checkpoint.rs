//! Checkpoints: everything needed to continue a run as if it had never stopped. One directory
//! per checkpoint, `checkpoints/step_NNNNNN/`, holding `model.safetensors` (the parameters, Hugging
//! Face names), `optim.safetensors` (AdamW's moments) and `state.json` (step, optimizer step
//! count, the data loader's and the sampler's RNG states). A checkpoint is written into a
//! temporary directory that is renamed into place, so a crash never leaves a half checkpoint
//! under a real name; the last `keep` are kept.

use crate::{io_err, Result, TrainError};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The scalars of a checkpoint (`state.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    /// AdamW's update count (bias correction).
    pub adam_t: u64,
    /// The training data loader's RNG state: its position.
    pub loader_rng: u64,
    /// The sample generator's RNG state.
    pub sample_rng: u64,
    /// Training tokens processed.
    pub tokens_seen: u64,
}

/// Writes `bytes` to `path` through a temporary file in the same directory, flushed and renamed:
/// readers see the old file or the new one, never a partial write.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Saves named tensors as safetensors atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = temp_path(path);
    candle_core::safetensors::save(tensors, &tmp)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Loads every tensor of a safetensors file, with one clear error when it is unreadable.
pub fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(TrainError::Checkpoint(format!("{}: missing", path.display())));
    }
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| TrainError::Checkpoint(format!("{}: not a readable safetensors file ({e})", path.display())))
}

fn step_dir(run: &Path, step: usize) -> PathBuf {
    run.join("checkpoints").join(format!("step_{step:06}"))
}

/// Writes checkpoint `state.step` under `run/checkpoints/` and deletes all but the newest `keep`.
pub fn save(
    run: &Path,
    model: &HashMap<String, Tensor>,
    optim: &HashMap<String, Tensor>,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let dir = step_dir(run, state.step);
    let parent = run.join("checkpoints");
    let tmp = parent.join(format!(".tmp_step_{:06}", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    candle_core::safetensors::save(model, tmp.join("model.safetensors"))?;
    candle_core::safetensors::save(optim, tmp.join("optim.safetensors"))?;
    let json = serde_json::to_string_pretty(state).expect("state serializes");
    write_atomic(&tmp.join("state.json"), json.as_bytes())?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    let all = list(run)?;
    for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(old).map_err(io_err(old))?;
    }
    Ok(dir)
}

/// The checkpoints of a run, oldest first.
pub fn list(run: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let parent = run.join("checkpoints");
    if !parent.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(&parent)
        .map_err(io_err(&parent))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step_")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// Parameters by Hugging Face name.
    pub model: HashMap<String, Tensor>,
    /// Optimizer moments.
    pub optim: HashMap<String, Tensor>,
    /// Scalars.
    pub state: TrainState,
}

/// Loads the checkpoint in `dir`.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| TrainError::Checkpoint(format!("{}: corrupted ({e})", state_path.display())))?;
    Ok(Checkpoint {
        model: load_tensors(&dir.join("model.safetensors"))?,
        optim: load_tensors(&dir.join("optim.safetensors"))?,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_reports_corruption() {
        let run = tempfile::tempdir().unwrap();
        let t: HashMap<String, Tensor> =
            [("w".to_string(), Tensor::new(&[1.5f32, 2.5], &Device::Cpu).unwrap())].into_iter().collect();
        for step in [10, 20, 30] {
            let state = TrainState { step, adam_t: step as u64, loader_rng: 7, sample_rng: 9, tokens_seen: 0 };
            save(run.path(), &t, &t, &state, 2).unwrap();
        }
        let all = list(run.path()).unwrap();
        assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![20, 30]);
        let c = load(&all[1].1).unwrap();
        assert_eq!(c.state.step, 30);
        assert_eq!(c.model["w"].to_vec1::<f32>().unwrap(), vec![1.5, 2.5]);
        std::fs::write(all[1].1.join("model.safetensors"), b"garbage").unwrap();
        let e = load(&all[1].1).err().unwrap().to_string();
        assert!(e.contains("model.safetensors") && e.contains("not a readable"), "{e}");
    }
}
