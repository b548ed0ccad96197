//! Fashion-MNIST in the idx format (gzipped or plain), padded from 28×28 to 32×32.

use std::path::{Path, PathBuf};

use super::{DataError, Dataset, read_maybe_gz};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const PAD: usize = 2;

/// Train and test splits from `dir`.
pub fn load_fashion_mnist(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    Ok((
        load_split(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        load_split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    ))
}

/// [`load_fashion_mnist`]'s files checked by header and size alone (see `check_available`).
pub fn check_fashion_mnist(dir: &Path) -> Result<(), DataError> {
    for (images, labels) in [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ] {
        let image_path = find(dir, images)?;
        let label_path = find(dir, labels)?;
        let n_images = check_header(&image_path, IMAGES_MAGIC, 3)?[0];
        let n_labels = check_header(&label_path, LABELS_MAGIC, 1)?[0];
        if n_images != n_labels {
            return Err(DataError::format(
                &label_path,
                format!(
                    "{n_labels} labels but {} has {n_images} images",
                    image_path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// An idx file's shape from its header, checked against the file's length (a gzip's by the
/// uncompressed length its trailer records): a truncated or padded file fails here.
fn check_header(path: &Path, magic: u32, dims: usize) -> Result<Vec<usize>, DataError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut start = [0u8; 2];
    let gz = file.read_exact(&mut start).is_ok() && start == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let header_len = 4 + 4 * dims;
    let mut header = vec![0u8; header_len];
    let read = if gz {
        flate2::read::GzDecoder::new(&mut file).read_exact(&mut header)
    } else {
        file.read_exact(&mut header)
    };
    read.map_err(|e| {
        DataError::format(
            path,
            format!("truncated or not idx: cannot read its {header_len}-byte header ({e})"),
        )
    })?;
    let shape = parse_header(path, &header, magic, dims)?;
    let expected = payload_len(path, &shape)? + header_len as u64;
    let actual = if gz {
        // The gzip trailer's last four bytes: the uncompressed length modulo 2^32.
        let mut isize = [0u8; 4];
        file.seek(SeekFrom::End(-4)).map_err(io)?;
        file.read_exact(&mut isize).map_err(io)?;
        u64::from(u32::from_le_bytes(isize))
    } else {
        len
    };
    let want = if gz { expected % (1 << 32) } else { expected };
    if actual != want {
        return Err(DataError::format(
            path,
            format!(
                "truncated or padded: header {shape:?} needs {expected} bytes, {} {actual}",
                if gz {
                    "its gzip trailer records"
                } else {
                    "the file has"
                }
            ),
        ));
    }
    Ok(shape)
}

/// The shape an idx header (at least `4 + 4·dims` bytes) gives, its magic number checked.
fn parse_header(
    path: &Path,
    header: &[u8],
    magic: u32,
    dims: usize,
) -> Result<Vec<usize>, DataError> {
    let found = be_u32(header, 0);
    if found != magic {
        return Err(DataError::format(
            path,
            format!("wrong idx magic number {found:#010x}, expected {magic:#010x}"),
        ));
    }
    Ok((0..dims)
        .map(|d| be_u32(header, 4 + 4 * d) as usize)
        .collect())
}

/// The data bytes an idx header of `shape` promises (a damaged header can promise more than any
/// file holds: an error, not an overflow).
fn payload_len(path: &Path, shape: &[usize]) -> Result<u64, DataError> {
    shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .filter(|&n| n < 1 << 40)
        .ok_or_else(|| {
            DataError::format(
                path,
                format!("idx header {shape:?} describes more data than any file holds"),
            )
        })
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for name in [stem.to_owned(), format!("{stem}.gz")] {
        if let Some(e) = super::not_a_file(&dir.join(name)) {
            return Err(e);
        }
    }
    [stem.to_owned(), format!("{stem}.gz")]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::Missing {
            what: format!("Fashion-MNIST file {stem}[.gz]"),
            path: dir.to_path_buf(),
            hint: "expected the four idx files train-images-idx3-ubyte, train-labels-idx1-ubyte, \
                   t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (plain or .gz)"
                .into(),
        })
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parse one idx file: checks the magic number and that the payload length matches the header.
fn parse(path: &Path, magic: u32, dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bytes = read_maybe_gz(path)?;
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(DataError::format(
            path,
            format!(
                "truncated: {} bytes, shorter than the {header}-byte idx header",
                bytes.len()
            ),
        ));
    }
    let shape = parse_header(path, &bytes, magic, dims)?;
    let expected = payload_len(path, &shape)?;
    let payload = (bytes.len() - header) as u64;
    if payload != expected {
        return Err(DataError::format(
            path,
            format!(
                "truncated or padded: header {shape:?} needs {expected} bytes of data, found {payload}"
            ),
        ));
    }
    Ok((shape, bytes[header..].to_vec()))
}

fn load_split(dir: &Path, images: &str, labels: &str) -> Result<Dataset, DataError> {
    let image_path = find(dir, images)?;
    let label_path = find(dir, labels)?;
    let (shape, pixels) = parse(&image_path, IMAGES_MAGIC, 3)?;
    let (lshape, label_bytes) = parse(&label_path, LABELS_MAGIC, 1)?;
    if shape[0] != lshape[0] {
        return Err(DataError::format(
            &label_path,
            format!(
                "{} labels but {} has {} images",
                lshape[0],
                image_path.display(),
                shape[0]
            ),
        ));
    }
    if let Some(bad) = label_bytes.iter().find(|&&l| l > 9) {
        return Err(DataError::format(
            &label_path,
            format!("label {bad} outside 0..=9"),
        ));
    }
    let (n, h, w) = (shape[0], shape[1], shape[2]);
    if h == 0 || w == 0 {
        return Err(DataError::format(
            &image_path,
            format!("images of {h}x{w} pixels: the header is damaged"),
        ));
    }
    let (oh, ow) = (h + 2 * PAD, w + 2 * PAD);
    let mut padded = vec![0u8; n * oh * ow];
    for (src, dst) in pixels
        .chunks_exact(h * w)
        .zip(padded.chunks_exact_mut(oh * ow))
    {
        for y in 0..h {
            dst[(y + PAD) * ow + PAD..(y + PAD) * ow + PAD + w]
                .copy_from_slice(&src[y * w..(y + 1) * w]);
        }
    }
    Ok(Dataset {
        channels: 1,
        height: oh,
        width: ow,
        classes: 10,
        images: padded,
        labels: label_bytes.into_iter().map(u16::from).collect(),
        masks: Vec::new(),
    })
}

/// Write an idx file (images when `shape` has 3 dims, labels when 1); for tests and tools.
pub fn write_idx(path: &Path, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    let magic = if shape.len() == 3 {
        IMAGES_MAGIC
    } else {
        LABELS_MAGIC
    };
    let mut out = magic.to_be_bytes().to_vec();
    for &d in shape {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_set(dir: &Path, n: usize, gz: bool) {
        let images: Vec<u8> = (0..n * 28 * 28).map(|i| (i % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        for (stem, shape, data) in [
            ("train-images-idx3-ubyte", vec![n, 28, 28], &images),
            ("train-labels-idx1-ubyte", vec![n], &labels),
            ("t10k-images-idx3-ubyte", vec![n, 28, 28], &images),
            ("t10k-labels-idx1-ubyte", vec![n], &labels),
        ] {
            let plain = dir.join(stem);
            write_idx(&plain, &shape, data).expect("write");
            if gz {
                let bytes = std::fs::read(&plain).expect("read");
                let mut enc = flate2::write::GzEncoder::new(
                    std::fs::File::create(dir.join(format!("{stem}.gz"))).expect("create"),
                    flate2::Compression::fast(),
                );
                enc.write_all(&bytes).expect("gz");
                enc.finish().expect("gz");
                std::fs::remove_file(plain).expect("rm");
            }
        }
    }

    #[test]
    fn reads_plain_and_gz_and_pads_to_32() {
        for gz in [false, true] {
            let dir = tempfile::tempdir().expect("tmp");
            write_set(dir.path(), 5, gz);
            let (train, test) = load_fashion_mnist(dir.path()).expect("valid files");
            assert_eq!(
                (train.len(), test.len(), train.height, train.width),
                (5, 5, 32, 32)
            );
            assert_eq!(train.labels, vec![0, 1, 2, 3, 4]);
            // Row 0 of image 0 sits at row 2, column 2 of the padded image; the border is zero.
            assert_eq!(
                &train.images[2 * 32 + 2..2 * 32 + 30],
                &(0..28u8).collect::<Vec<_>>()[..]
            );
            assert!(train.images[..64].iter().all(|&p| p == 0));
        }
    }

    #[test]
    fn truncated_file_wrong_magic_and_count_mismatch_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        write_set(dir.path(), 4, false);
        let path = dir.path().join("train-images-idx3-ubyte");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 100]).expect("truncate");
        let err = load_fashion_mnist(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
            "{err}"
        );

        write_idx(&path, &[4, 28, 28], &vec![0; 4 * 784]).expect("write");
        let labels = dir.path().join("train-labels-idx1-ubyte");
        write_idx(&labels, &[3], &[0, 1, 2]).expect("write");
        let err = load_fashion_mnist(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("3 labels") && err.contains("4 images"),
            "{err}"
        );

        let mut wrong = bytes.clone();
        wrong[3] = 0x01;
        std::fs::write(&path, wrong).expect("write");
        let err = load_fashion_mnist(dir.path()).unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn the_check_before_a_run_reads_headers_and_sizes_plain_and_gz() {
        for gz in [false, true] {
            let dir = tempfile::tempdir().expect("tmp");
            write_set(dir.path(), 5, gz);
            check_fashion_mnist(dir.path()).expect("a whole set passes");
            let name = if gz {
                "train-images-idx3-ubyte.gz"
            } else {
                "train-images-idx3-ubyte"
            };
            let path = dir.path().join(name);
            let bytes = std::fs::read(&path).expect("read");
            // Cut short (a gzip loses its trailer), then padded.
            std::fs::write(&path, &bytes[..bytes.len() - 7]).expect("truncate");
            let err = check_fashion_mnist(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains("truncated"),
                "gz {gz}: {err}"
            );
            if !gz {
                let mut padded = bytes.clone();
                padded.extend_from_slice(&[0; 9]);
                std::fs::write(&path, padded).expect("pad");
                let err = check_fashion_mnist(dir.path()).unwrap_err().to_string();
                assert!(err.contains("padded"), "{err}");
            }
            std::fs::write(&path, b"not idx").expect("garbage");
            let err = check_fashion_mnist(dir.path()).unwrap_err().to_string();
            assert!(err.contains(name), "gz {gz}: {err}");
            std::fs::remove_file(&path).expect("rm");
            let err = check_fashion_mnist(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("not found") && err.contains("train-images"),
                "{err}"
            );
        }
        let dir = tempfile::tempdir().expect("tmp");
        write_set(dir.path(), 4, false);
        write_idx(&dir.path().join("t10k-labels-idx1-ubyte"), &[3], &[0, 1, 2]).expect("write");
        let err = check_fashion_mnist(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("3 labels") && err.contains("4 images"),
            "{err}"
        );
    }
}
