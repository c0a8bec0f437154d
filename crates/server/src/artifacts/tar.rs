//! POSIX tar (ustar, with pax extended headers where ustar cannot say it) as bytes to
//! put on the wire: each file is a header block or two, its bytes, and padding to the
//! next 512-byte block; the archive ends with two zero blocks. Only regular files are
//! written, mode 0644, owner 0:0, so extraction never depends on who built the archive.

const BLOCK: usize = 512;
/// The longest path the ustar `name` field holds (the `prefix` split is not used: a
/// pax `path` record says any path exactly).
const USTAR_NAME_MAX: usize = 100;
/// The largest size the 11 octal digits of ustar's `size` field hold (8 GiB - 1).
const USTAR_SIZE_MAX: u64 = (1 << 33) - 1;
/// The largest mtime the 11 octal digits of `mtime` hold.
const USTAR_MTIME_MAX: u64 = (1 << 33) - 1;

/// The two zero blocks that end an archive.
pub const END_OF_ARCHIVE: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// The header block(s) of one regular file: a pax extended header first when the path
/// is longer than ustar allows or not ASCII, or the size does not fit ustar's field.
pub fn file_header(path: &str, size: u64, mtime_secs: i64) -> Vec<u8> {
    let mtime = u64::try_from(mtime_secs).unwrap_or(0).min(USTAR_MTIME_MAX);
    let needs_pax_path = path.len() > USTAR_NAME_MAX || !path.is_ascii();
    let needs_pax_size = size > USTAR_SIZE_MAX;
    let mut out = Vec::with_capacity(3 * BLOCK);
    if needs_pax_path || needs_pax_size {
        let mut records = Vec::new();
        if needs_pax_path {
            records.extend(pax_record("path", path));
        }
        if needs_pax_size {
            records.extend(pax_record("size", &size.to_string()));
        }
        let pax_name = format!("PaxHeaders/{}", ascii_stand_in(path, USTAR_NAME_MAX - 11));
        out.extend(ustar_block(&pax_name, records.len() as u64, mtime, b'x'));
        out.extend(&records);
        out.resize(out.len() + padding(records.len() as u64), 0);
    }
    let name = if needs_pax_path {
        ascii_stand_in(path, USTAR_NAME_MAX)
    } else {
        path.to_owned()
    };
    out.extend(ustar_block(&name, size.min(USTAR_SIZE_MAX), mtime, b'0'));
    out
}

/// Zero bytes that pad `size` bytes of data to the next block.
pub fn padding(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 { 0 } else { BLOCK - rem }
}

/// A pax record, `"<len> <key>=<value>\n"`, where `len` counts the whole record
/// including its own digits.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// What readers without pax support see instead of the real path: its last `max`
/// bytes with anything outside printable ASCII replaced.
fn ascii_stand_in(path: &str, max: usize) -> String {
    let ascii: String = path
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    ascii[ascii.len().saturating_sub(max)..].to_owned()
}

fn ustar_block(name: &str, size: u64, mtime: u64, typeflag: u8) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let name = name.as_bytes();
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], 0o644);
    octal(&mut b[108..116], 0);
    octal(&mut b[116..124], 0);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    // The checksum is the byte sum with its own field counted as spaces, written as six
    // octal digits, NUL, space.
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let digits = format!("{sum:06o}");
    b[148..154].copy_from_slice(digits.as_bytes());
    b[154] = 0;
    b
}

/// A numeric field: zero-padded octal digits filling all but the last byte, then NUL.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    field[..width].copy_from_slice(digits.as_bytes());
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length a pax record starts with.
    fn record_len(record: &[u8]) -> usize {
        let digits = record.iter().position(|&b| b == b' ').unwrap();
        std::str::from_utf8(&record[..digits])
            .unwrap()
            .parse()
            .unwrap()
    }

    fn checksum_ok(b: &[u8]) -> bool {
        let stored = u32::from_str_radix(std::str::from_utf8(&b[148..154]).unwrap(), 8).unwrap();
        let sum: u32 = b
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(x)
                }
            })
            .sum();
        stored == sum
    }

    #[test]
    fn a_short_ascii_path_is_one_ustar_block() {
        let h = file_header("dir/a.txt", 1234, 1_700_000_000);
        assert_eq!(h.len(), BLOCK);
        assert_eq!(&h[..9], b"dir/a.txt");
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(h[156], b'0');
        assert!(checksum_ok(&h));
    }

    #[test]
    fn long_and_non_ascii_paths_get_a_pax_path_record() {
        for path in ["d/".repeat(60) + "f", "données/é.txt".to_owned()] {
            let h = file_header(&path, 5, 0);
            assert_eq!(h.len(), 3 * BLOCK, "{path}");
            assert_eq!(h[156], b'x');
            let record = format!(" path={path}\n");
            let len = record_len(&h[BLOCK..]);
            assert_eq!(len, len.to_string().len() + record.len());
            assert!(checksum_ok(&h[..BLOCK]) && checksum_ok(&h[2 * BLOCK..]));
            assert_eq!(h[2 * BLOCK + 156], b'0');
        }
    }

    #[test]
    fn pax_record_lengths_count_their_own_digits() {
        assert_eq!(pax_record("a", "bcde"), b"9 a=bcde\n".to_vec());
        // 9 bytes and one digit would be 10, which has two digits: the length is 11.
        assert_eq!(pax_record("a", "bcdef"), b"11 a=bcdef\n".to_vec());
        for n in 0..300 {
            let r = pax_record("path", &"x".repeat(n));
            assert_eq!(record_len(&r), r.len());
        }
    }

    #[test]
    fn padding_fills_to_the_block() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
