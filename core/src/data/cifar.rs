//! CIFAR-10 / CIFAR-100, official binary version (records of label byte(s) + 3072 pixel bytes).

use std::path::{Path, PathBuf};

use super::{DataError, Dataset};

const PIXELS: usize = 3 * 32 * 32;

/// [`load`]'s files checked by presence and size alone: each a whole number of records.
pub fn check(dir: &Path, hundred: bool) -> Result<(), DataError> {
    let (train, test) = files(dir, hundred);
    for path in train.iter().chain(&test) {
        if let Some(e) = super::not_a_file(path) {
            return Err(e);
        }
        if !path.is_file() {
            return Err(missing(path, hundred));
        }
        let len = std::fs::metadata(path)
            .map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        whole_records(path, len, hundred)?;
        labels_in_range(path, hundred)?;
    }
    Ok(())
}

/// Every record of `path` has a label its data set has (read record by record; the pixels are
/// skipped over, not kept).
fn labels_in_range(path: &Path, hundred: bool) -> Result<(), DataError> {
    use std::io::Read;
    let label_bytes = if hundred { 2 } else { 1 };
    let classes = if hundred { 100 } else { 10 };
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(io)?);
    let mut rec = vec![0u8; label_bytes + PIXELS];
    let mut k = 0usize;
    loop {
        match file.read_exact(&mut rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        let label = rec[label_bytes - 1];
        if usize::from(label) >= classes {
            return Err(DataError::format(
                path,
                format!("record {k}: label {label} outside 0..{classes}"),
            ));
        }
        k += 1;
    }
}

/// Train and test splits from `dir` (the folder with the `.bin` files, or its parent).
pub fn load(dir: &Path, hundred: bool) -> Result<(Dataset, Dataset), DataError> {
    let (train, test) = files(dir, hundred);
    Ok((
        read_records(&train, hundred)?,
        read_records(&test, hundred)?,
    ))
}

/// The training files and the test file.
fn files(dir: &Path, hundred: bool) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (sub, train_files, test_file): (&str, Vec<String>, &str) = if hundred {
        ("cifar-100-binary", vec!["train.bin".into()], "test.bin")
    } else {
        (
            "cifar-10-batches-bin",
            (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            "test_batch.bin",
        )
    };
    // Whatever is there by that name (a link, a device) decides, so that what it is can be said.
    let base = if std::fs::symlink_metadata(dir.join(test_file)).is_ok() {
        dir.to_path_buf()
    } else {
        dir.join(sub)
    };
    (
        train_files.iter().map(|n| base.join(n)).collect(),
        vec![base.join(test_file)],
    )
}

fn missing(path: &Path, hundred: bool) -> DataError {
    let (name, which) = if hundred {
        ("CIFAR-100", crate::spec::config::DatasetName::Cifar100)
    } else {
        ("CIFAR-10", crate::spec::config::DatasetName::Cifar10)
    };
    DataError::Missing {
        what: format!("{name} file"),
        path: path.to_path_buf(),
        hint: super::hint(which).into(),
    }
}

/// A file of `len` bytes holds whole records, at least one.
fn whole_records(path: &Path, len: u64, hundred: bool) -> Result<(), DataError> {
    let label_bytes = if hundred { 2 } else { 1 };
    let record = (label_bytes + PIXELS) as u64;
    if len == 0 || !len.is_multiple_of(record) {
        return Err(DataError::format(
            path,
            format!(
                "corrupt: {len} bytes is not a whole number of {record}-byte records \
                 ({label_bytes} label byte(s) + 3072 pixels)"
            ),
        ));
    }
    Ok(())
}

fn read_records(paths: &[PathBuf], hundred: bool) -> Result<Dataset, DataError> {
    let label_bytes = if hundred { 2 } else { 1 };
    let record = label_bytes + PIXELS;
    let classes = if hundred { 100 } else { 10 };
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        if !path.is_file() {
            return Err(missing(path, hundred));
        }
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        whole_records(path, bytes.len() as u64, hundred)?;
        for (k, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[label_bytes - 1]; // CIFAR-100: fine label is the second byte
            if usize::from(label) >= classes {
                return Err(DataError::format(
                    path,
                    format!("record {k}: label {label} outside 0..{classes}"),
                ));
            }
            labels.push(u16::from(label));
            images.extend_from_slice(&rec[label_bytes..]);
        }
    }
    Ok(Dataset {
        channels: 3,
        height: 32,
        width: 32,
        classes,
        images,
        labels,
        masks: Vec::new(),
    })
}

/// Write records in the official layout (for tests and tools). `coarse` is used by CIFAR-100 only.
pub fn write_cifar_binary(
    path: &Path,
    hundred: bool,
    labels: &[u8],
    images: &[u8],
) -> std::io::Result<()> {
    let mut out = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        if hundred {
            out.push(label / 5); // a coarse label; readers must use the fine one
        }
        out.push(label);
        out.extend_from_slice(&images[i * PIXELS..(i + 1) * PIXELS]);
    }
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize) -> Vec<u8> {
        (0..n * PIXELS).map(|i| (i * 7 % 256) as u8).collect()
    }

    #[test]
    fn cifar10_reads_all_batches_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let sub = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).expect("mkdir");
        for i in 1..=5 {
            write_cifar_binary(
                &sub.join(format!("data_batch_{i}.bin")),
                false,
                &[i, 9],
                &images(2),
            )
            .expect("write");
        }
        write_cifar_binary(&sub.join("test_batch.bin"), false, &[3], &images(1)).expect("write");
        let (train, test) = load(dir.path(), false).expect("valid");
        assert_eq!(train.labels, vec![1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
        assert_eq!(test.labels, vec![3]);
        assert_eq!(&train.images[..PIXELS], &images(1)[..]);
        assert_eq!(train.classes, 10);
    }

    #[test]
    fn cifar100_uses_fine_labels() {
        let dir = tempfile::tempdir().expect("tmp");
        write_cifar_binary(
            &dir.path().join("train.bin"),
            true,
            &[99, 42, 7],
            &images(3),
        )
        .expect("write");
        write_cifar_binary(&dir.path().join("test.bin"), true, &[57], &images(1)).expect("write");
        let (train, test) = load(dir.path(), true).expect("valid");
        assert_eq!(train.labels, vec![99, 42, 7]);
        assert_eq!(test.labels, vec![57]);
        assert_eq!(train.classes, 100);
        assert_eq!(
            &train.images[PIXELS..2 * PIXELS],
            &images(3)[PIXELS..2 * PIXELS]
        );
    }

    #[test]
    fn corrupt_and_missing_files_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        write_cifar_binary(&dir.path().join("train.bin"), true, &[1, 2], &images(2))
            .expect("write");
        std::fs::write(dir.path().join("test.bin"), vec![0u8; 1000]).expect("write");
        let err = load(dir.path(), true).unwrap_err().to_string();
        assert!(
            err.contains("test.bin") && err.contains("3074-byte records"),
            "{err}"
        );
        let err = check(dir.path(), true).unwrap_err().to_string();
        assert!(
            err.contains("test.bin") && err.contains("3074-byte records"),
            "the check before a run finds it too: {err}"
        );
        let err = load(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("data_batch_1.bin"), "{err}");
        let err = check(dir.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_1.bin") && err.contains("not found"),
            "{err}"
        );
        let mut bad = vec![0u8; 3073];
        bad[0] = 10;
        let d10 = tempfile::tempdir().expect("tmp");
        for name in [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ] {
            std::fs::write(d10.path().join(name), &bad).expect("write");
        }
        let err = load(d10.path(), false).unwrap_err().to_string();
        assert!(err.contains("label 10"), "{err}");
    }
}
