//! File formats: .npy arrays of little-endian f32 in C order.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use crate::error::{Error, Result};

/// An n-dimensional f32 array in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Elements in C order.
    pub data: Vec<f32>,
    /// Length of each axis; empty for a scalar.
    pub shape: Vec<usize>,
}

impl Array {
    /// The shape seen as rows of the last axis: (product of the other axes, last axis). A
    /// scalar is one row of one element.
    pub fn rows_cols(&self) -> (usize, usize) {
        rows_cols(&self.shape)
    }
}

/// Returns the rows and columns of an array of `shape` seen as rows over its last axis: a
/// 0-d array is one row of one element.
pub fn rows_cols(shape: &[usize]) -> (usize, usize) {
    match shape.split_last() {
        None => (1, 1),
        Some((&cols, rest)) => (rest.iter().product(), cols),
    }
}

fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Reads a .npy file of little-endian f32 in C order, with any number of dimensions.
pub fn read_npy(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => file_error(path, "file not found"),
        _ => file_error(path, format!("cannot read: {error}")),
    })?;
    parse_npy(&bytes, path).map_err(|message| file_error(path, message))
}

/// Parses the bytes of the .npy file at `path`; the error is a message without the file
/// name, which a warning names.
fn parse_npy(bytes: &[u8], path: &Path) -> std::result::Result<Array, String> {
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err("not a .npy file: the magic string \\x93NUMPY is missing".to_owned());
    }
    let mut rest = bytes;
    // npyz explains some header errors over several lines; the first names the problem.
    let file = npyz::NpyFile::new(&mut rest).map_err(|error| {
        let message = error.to_string();
        format!(
            "invalid .npy header: {}",
            message.lines().next().unwrap_or_default().trim()
        )
    })?;

    let dtype = file.dtype();
    if dtype.descr() != "'<f4'" {
        return Err(format!(
            "dtype is {}, but sigmax reads little-endian float32 ('<f4'); convert it in Python \
             with np.save(path, a.astype('<f4'))",
            dtype.descr()
        ));
    }
    if file.order() == npyz::Order::Fortran {
        return Err(
            "array is in Fortran order, but sigmax reads C order; save a C-order copy \
                    with np.save(path, np.ascontiguousarray(a))"
                .to_owned(),
        );
    }

    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    let elements = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    let expected_bytes = elements
        .checked_mul(4)
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    drop(file);
    if rest.len() < expected_bytes {
        return Err(format!(
            "file is truncated: shape {shape:?} needs {expected_bytes} bytes of data, but only {} follow the header",
            rest.len()
        ));
    }
    if rest.len() > expected_bytes {
        // numpy's np.load ignores bytes after the data, so sigmax reads such files too.
        log::warn!(
            "{}: ignoring {} bytes after the {expected_bytes} bytes of data of shape {shape:?}",
            path.display(),
            rest.len() - expected_bytes
        );
    }

    let data = rest[..expected_bytes]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Array { data, shape })
}

/// Writes `array` as a .npy file of little-endian f32 in C order, through [`write_atomic`].
pub fn write_npy(path: &Path, array: &Array) -> Result<()> {
    write_atomic(path, |out| {
        let shape: Vec<u64> = array.shape.iter().map(|&d| d as u64).collect();
        let mut writer = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(out)
            .begin_nd()?;
        writer.extend(array.data.iter().copied())?;
        writer.finish()
    })
}

/// Writes a file through `write` into a temporary file in the same folder, renamed over `path`
/// only once complete, so that a failure never leaves a partial file at `path`.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let write_error = |error: std::io::Error| file_error(path, format!("cannot write: {error}"));

    let mut builder = tempfile::Builder::new();
    builder.prefix(".sigmax-").suffix(".tmp");
    // tempfile creates files readable by the owner alone; 0o666 less the umask is what a
    // plain file creation gives, and the rename keeps it.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let temporary = builder.tempfile_in(&folder).map_err(write_error)?;
    {
        let mut out = BufWriter::new(temporary.as_file());
        write(&mut out).map_err(write_error)?;
        out.flush().map_err(write_error)?;
    }
    temporary
        .persist(path)
        .map_err(|error| write_error(error.error))?;
    Ok(())
}

/// Returns an error when `path`'s folder does not exist or `path` is itself a folder, so that
/// a run fails before it computes anything.
pub fn check_output_folder(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(file_error(
            path,
            "is a folder; give the path of a file to write, such as out.npy inside it",
        ));
    }
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => Err(file_error(
            path,
            format!("output folder {} does not exist", parent.display()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> std::result::Result<Array, String> {
        parse_npy(bytes, Path::new("test.npy"))
    }

    fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn parse_reads_c_order_f32() {
        let bytes = npy_bytes("<f4", false, "(2, 2)", &f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
        let array = parse(&bytes).unwrap();
        assert_eq!(array.shape, [2, 2]);
        assert_eq!(array.data, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(array.rows_cols(), (2, 2));
    }

    #[test]
    fn parse_reads_scalar_and_empty() {
        let scalar = parse(&npy_bytes("<f4", false, "()", &f32_bytes(&[5.0]))).unwrap();
        assert_eq!(scalar.rows_cols(), (1, 1));
        let empty = parse(&npy_bytes("<f4", false, "(0, 5)", &[])).unwrap();
        assert!(empty.data.is_empty());
        assert_eq!(empty.rows_cols(), (0, 5));
    }

    #[test]
    fn parse_rejects_other_dtypes() {
        let error = parse(&npy_bytes("<f8", false, "(1,)", &[0; 8])).unwrap_err();
        assert!(error.contains("'<f8'"), "{error}");
        let error = parse(&npy_bytes(">f4", false, "(1,)", &[0; 4])).unwrap_err();
        assert!(error.contains("'>f4'"), "{error}");
    }

    #[test]
    fn parse_rejects_fortran_order() {
        let error = parse(&npy_bytes("<f4", true, "(2, 2)", &[0; 16])).unwrap_err();
        assert!(error.contains("Fortran"), "{error}");
    }

    #[test]
    fn parse_rejects_truncated_data() {
        let error = parse(&npy_bytes("<f4", false, "(3,)", &[0; 8])).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
    }

    #[test]
    fn parse_rejects_garbage() {
        let error = parse(b"hello").unwrap_err();
        assert!(error.contains("not a .npy file"), "{error}");
        let mut bytes = npy_bytes("<f4", false, "(3,)", &[0; 12]);
        bytes.truncate(20);
        assert!(parse(&bytes).is_err());
    }

    #[test]
    fn parse_ignores_trailing_bytes() {
        let mut data = f32_bytes(&[1.0, 2.0]);
        data.extend(b"xxxx");
        let array = parse(&npy_bytes("<f4", false, "(2,)", &data)).unwrap();
        assert_eq!(array.data, [1.0, 2.0]);
    }

    #[test]
    fn parse_error_is_one_line() {
        let bytes = npy_bytes("<f4", false, "(100, 2a)", &[0; 8]);
        let error = parse(&bytes).unwrap_err();
        assert_eq!(error.lines().count(), 1, "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn written_file_is_not_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("out.npy");
        let array = Array {
            data: vec![1.0],
            shape: vec![1],
        };
        write_npy(&path, &array).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        // Every common umask (022, 002, 027) leaves the group read bit.
        assert_ne!(mode & 0o040, 0, "mode {mode:o}");
    }

    #[test]
    fn write_then_read_round_trips() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("out.npy");
        let array = Array {
            data: vec![0.25, -1.5, 3.0, 7.0, 8.0, 9.0],
            shape: vec![3, 2],
        };
        write_npy(&path, &array).unwrap();
        assert_eq!(read_npy(&path).unwrap(), array);
        let leftovers = std::fs::read_dir(folder.path()).unwrap().count();
        assert_eq!(leftovers, 1, "the temporary file was not renamed");
    }
}
