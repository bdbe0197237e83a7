//! Configuration files in YAML, read as Flink reads `config.yaml`.

/// The `(key, value)` pairs of a YAML configuration: a mapping of keys to scalars, nested mappings
/// joined with dots (`state: {backend: {forst: ...}}` is `state.backend.forst...`), as Flink's
/// `config.yaml` allows. Empty documents and null values give nothing. Shared with the state
/// backend's RocksDB tuning keys.
pub fn yaml_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let Some(doc) = docs.first() else {
        return Ok(Vec::new());
    };
    fn walk(prefix: &str, y: &Yaml, out: &mut Vec<(String, String)>) -> Result<(), String> {
        match y {
            Yaml::Hash(h) => {
                for (k, v) in h {
                    let k = match k {
                        Yaml::String(s) => s.clone(),
                        other => return Err(format!("key {other:?} is not a string")),
                    };
                    let key = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out)?;
                }
                Ok(())
            }
            Yaml::String(s) => {
                out.push((prefix.to_string(), s.clone()));
                Ok(())
            }
            Yaml::Integer(i) => {
                out.push((prefix.to_string(), i.to_string()));
                Ok(())
            }
            Yaml::Real(r) => {
                out.push((prefix.to_string(), r.clone()));
                Ok(())
            }
            Yaml::Boolean(b) => {
                out.push((prefix.to_string(), b.to_string()));
                Ok(())
            }
            Yaml::Null => Ok(()),
            other => Err(format!("`{prefix}`: unsupported value {other:?}")),
        }
    }
    let mut pairs = Vec::new();
    match doc {
        Yaml::Hash(_) => walk("", doc, &mut pairs)?,
        Yaml::Null => {}
        _ => return Err("expected a mapping of keys to values".into()),
    }
    Ok(pairs)
}
