//! Environment overrides: `<PREFIX><SECTION>_<KEY>=value` sets `[section] key = value`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ConfigError;

/// Which variables override keys: those starting with `prefix`, except `except` (variables
/// under the prefix that carry something else, e.g. a secret).
#[derive(Debug, Clone, Copy)]
pub struct EnvOverrides<'a> {
    /// e.g. `DYNAMIQ_SIDECAR_`.
    pub prefix: &'a str,
    /// Variables under the prefix that are not key overrides.
    pub except: &'a [&'a str],
}

impl EnvOverrides<'_> {
    /// Applies the variables of `env` to `table`, the document of a `T`. A value is typed like
    /// the key's default (a string key stays a string even if it looks like a number); each
    /// override is checked alone so an error names its variable. Returns the keys set with
    /// their variable names.
    pub fn apply<T>(
        &self,
        table: &mut toml::Table,
        env: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ConfigError>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let defaults = toml::Table::try_from(T::default()).map_err(|e| ConfigError {
            origin: None,
            key: String::new(),
            message: format!("the built-in defaults do not serialize: {e}"),
        })?;
        let mut set = Vec::new();
        let mut vars: Vec<&(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with(self.prefix) && !self.except.contains(&k.as_str()))
            .collect();
        vars.sort();
        for (var, value) in vars {
            let rest = var[self.prefix.len()..].to_ascii_lowercase();
            let Some((section, key)) = defaults.keys().find_map(|s| {
                rest.strip_prefix(s.as_str())
                    .and_then(|r| r.strip_prefix('_'))
                    .map(|k| (s.clone(), k.to_string()))
            }) else {
                return Err(ConfigError {
                    origin: Some(format!("env {var}")),
                    key: rest,
                    message: "unknown configuration section".into(),
                });
            };
            let dotted = format!("{section}.{key}");
            let Some(default) = defaults.get(&section).and_then(|s| s.get(&key)) else {
                return Err(ConfigError {
                    origin: Some(format!("env {var}")),
                    key: dotted,
                    message: "unknown configuration key".into(),
                });
            };
            let typed = match default {
                toml::Value::String(_) => toml::Value::String(value.clone()),
                _ => toml::from_str::<toml::Table>(&format!("v = {value}"))
                    .ok()
                    .and_then(|mut t| t.remove("v"))
                    .unwrap_or(toml::Value::String(value.clone())),
            };
            let section_table = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match section_table {
                toml::Value::Table(t) => {
                    t.insert(key, typed);
                }
                _ => {
                    return Err(ConfigError {
                        origin: Some(format!("env {var}")),
                        key: section,
                        message: "is not a table in the config file".into(),
                    });
                }
            }
            if let Err(e) = toml::Value::Table(table.clone()).try_into::<T>() {
                return Err(ConfigError {
                    origin: Some(format!("env {var}")),
                    key: dotted,
                    message: e.message().trim().to_string(),
                });
            }
            set.push((dotted, var.clone()));
        }
        Ok(set)
    }
}
