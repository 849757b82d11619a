//! Reading a finetuning config: YAML, then `key=value` overrides from the command line
//! (dotted keys reach into groups: `criterion.disc_start=0`), then the typed
//! [`TrainConfig`], whose unknown keys are errors listing the valid ones.

use anyhow::{bail, Context, Result};
use medvae_model::train::TrainConfig;
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// Load `path` and apply `overrides` (`key=value`, value parsed as YAML: `1e-4`, `true`,
/// `null`, `[1, 2]`).
pub fn load(path: &Path, overrides: &[String]) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut value: Value = serde_yaml::from_str(&text)
        .with_context(|| format!("config {}: not valid YAML", path.display()))?;
    for ov in overrides {
        apply_override(&mut value, ov).with_context(|| format!("override `{ov}`"))?;
    }
    let config: TrainConfig =
        serde_yaml::from_value(value).with_context(|| format!("config {}", path.display()))?;
    config
        .validate()
        .with_context(|| format!("config {}", path.display()))?;
    Ok(config)
}

fn apply_override(root: &mut Value, ov: &str) -> Result<()> {
    let Some((key, raw)) = ov.split_once('=') else {
        bail!("expected key=value");
    };
    let key = key.trim();
    if key.is_empty() {
        bail!("empty key");
    }
    let parsed: Value =
        serde_yaml::from_str(raw).with_context(|| format!("value `{raw}` is not valid YAML"))?;
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map: &mut Mapping = match node {
            Value::Mapping(m) => m,
            Value::Null => {
                *node = Value::Mapping(Mapping::new());
                match node {
                    Value::Mapping(m) => m,
                    _ => unreachable!("just set"),
                }
            }
            _ => bail!("`{}` is not a group", parts[..i].join(".")),
        };
        let k = Value::String(part.to_string());
        if i + 1 == parts.len() {
            map.insert(k, parsed);
            return Ok(());
        }
        node = map.entry(k).or_insert(Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file of this test's own (tests run in parallel in one process), removed when
    /// dropped.
    struct TempConfig(std::path::PathBuf);

    impl std::ops::Deref for TempConfig {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write(name: &str, text: &str) -> TempConfig {
        let p = std::env::temp_dir().join(format!(
            "medvae-ft-config-{}-{name}.yaml",
            std::process::id()
        ));
        std::fs::write(&p, text).unwrap();
        TempConfig(p)
    }

    const BASE: &str = "task_name: t\nmodel_name: medvae_4_1_2d\nbatch_size: 2\n\
        base_learning_rate: 4.5e-6\nmax_epoch: 1\noutput_dir: runs/t\n\
        dataloader: {config: d.yaml, prepared_dir: p}\ncriterion: {disc_start: 3125}\n";

    #[test]
    fn overrides_reach_into_groups_and_parse_yaml_values() {
        let p = write("overrides", BASE);
        let cfg = load(
            &p,
            &[
                "criterion.disc_start=0".into(),
                "batch_size=4".into(),
                "weights=null".into(),
                "criterion.learn_logvar=true".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.criterion.disc_start, 0);
        assert_eq!(cfg.batch_size, 4);
        assert!(cfg.criterion.learn_logvar);
        assert!((cfg.learning_rate() - 4.0 * 4.5e-6).abs() < 1e-12);
    }

    #[test]
    fn unknown_keys_are_errors_listing_the_valid_ones() {
        let p = write("unknown", BASE);
        let err = format!("{:#}", load(&p, &["batchsize=4".into()]).unwrap_err());
        assert!(
            err.contains("batchsize") && err.contains("batch_size"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            load(&p, &["criterion.kl_wieght=1".into()]).unwrap_err()
        );
        assert!(
            err.contains("kl_wieght") && err.contains("kl_weight"),
            "{err}"
        );
        let err = format!("{:#}", load(&p, &["novalue".into()]).unwrap_err());
        assert!(err.contains("key=value"), "{err}");
        let err = format!("{:#}", load(&p, &["batch_size=0".into()]).unwrap_err());
        assert!(err.contains("batch_size"), "{err}");
    }
}
