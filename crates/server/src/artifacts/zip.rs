//! ZIP (stored, no compression) as bytes to put on the wire. Sizes are known from the
//! manifest but the CRC-32 only once a file has been sent, so every entry has general
//! purpose flag bit 3: its local header carries zeros and a data descriptor after the
//! bytes carries the CRC and sizes; the central directory at the end repeats them.
//! ZIP64 records are used exactly where a size, an offset or the entry count does not
//! fit the classic fields. Names are UTF-8 (flag bit 11).

const LOCAL_SIG: u32 = 0x0403_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const END_SIG: u32 = 0x0605_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
/// Bit 3 (CRC and sizes in a data descriptor) and bit 11 (UTF-8 names).
const FLAGS: u16 = 0x0808;
/// 2.0 reads stored entries with data descriptors; 4.5 is needed for ZIP64.
const VERSION_CLASSIC: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// Made by Unix (high byte 3), so the external attributes carry the mode.
const MADE_BY: u16 = (3 << 8) | VERSION_ZIP64;
/// A regular file, mode 0644, in the Unix half of the external attributes.
const EXTERNAL_ATTRS: u32 = 0o100_644 << 16;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// Values at or above this do not fit a classic 32-bit field (all ones means "see the
/// ZIP64 record").
pub const CLASSIC_MAX: u64 = 0xFFFF_FFFF;
const CLASSIC_COUNT_MAX: u64 = 0xFFFF;

/// One entry as the central directory lists it.
pub struct Entry {
    pub name: String,
    pub dos_time: u16,
    pub dos_date: u16,
    pub crc: u32,
    pub size: u64,
    /// Where its local header starts.
    pub offset: u64,
}

/// MS-DOS date and time (UTC, two-second resolution) of a Unix time; before 1980 is
/// 1980-01-01, what the format can say.
pub fn dos_date_time(unix_secs: i64) -> (u16, u16) {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix_secs) else {
        return (0, (1 << 5) | 1);
    };
    if t.year() < 1980 {
        return (0, (1 << 5) | 1);
    }
    let year = (t.year() - 1980).min(127) as u16;
    let date = (year << 9) | (u16::from(u8::from(t.month())) << 5) | u16::from(t.day());
    let time =
        (u16::from(t.hour()) << 11) | (u16::from(t.minute()) << 5) | (u16::from(t.second()) / 2);
    (time, date)
}

/// Whether an entry of this size needs ZIP64 sizes.
pub fn size_needs_zip64(size: u64) -> bool {
    size >= CLASSIC_MAX
}

pub fn local_header(name: &str, dos_time: u16, dos_date: u16, zip64: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(30 + name.len() + 20);
    put32(&mut b, LOCAL_SIG);
    put_entry_fields(&mut b, zip64, dos_time, dos_date);
    put32(&mut b, 0); // CRC-32: in the data descriptor
    // Sizes in the data descriptor; all ones with a ZIP64 extra field announces that
    // the descriptor's sizes are 8 bytes each.
    let sizes = if zip64 { u32::MAX } else { 0 };
    put32(&mut b, sizes);
    put32(&mut b, sizes);
    put16(&mut b, name.len() as u16);
    put16(&mut b, if zip64 { 20 } else { 0 });
    b.extend_from_slice(name.as_bytes());
    if zip64 {
        put16(&mut b, ZIP64_EXTRA_ID);
        put16(&mut b, 16);
        put64(&mut b, 0);
        put64(&mut b, 0);
    }
    b
}

pub fn data_descriptor(crc: u32, size: u64, zip64: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(24);
    put32(&mut b, DESCRIPTOR_SIG);
    put32(&mut b, crc);
    if zip64 {
        put64(&mut b, size);
        put64(&mut b, size);
    } else {
        put32(&mut b, size as u32);
        put32(&mut b, size as u32);
    }
    b
}

/// One central directory record. `zip64_size` and `zip64_offset` say which values go
/// to the ZIP64 extra field (the writer sets them from the values; tests force them).
pub fn central_record(e: &Entry, zip64_size: bool, zip64_offset: bool) -> Vec<u8> {
    let mut extra = Vec::new();
    if zip64_size {
        put64(&mut extra, e.size);
        put64(&mut extra, e.size);
    }
    if zip64_offset {
        put64(&mut extra, e.offset);
    }
    let mut b = Vec::with_capacity(46 + e.name.len() + 4 + extra.len());
    put32(&mut b, CENTRAL_SIG);
    put16(&mut b, MADE_BY);
    let zip64 = zip64_size || zip64_offset;
    put_entry_fields(&mut b, zip64, e.dos_time, e.dos_date);
    put32(&mut b, e.crc);
    let size = if zip64_size { u32::MAX } else { e.size as u32 };
    put32(&mut b, size);
    put32(&mut b, size);
    put16(&mut b, e.name.len() as u16);
    put16(&mut b, if zip64 { 4 + extra.len() as u16 } else { 0 });
    put16(&mut b, 0); // comment
    put16(&mut b, 0); // disk
    put16(&mut b, 0); // internal attributes
    put32(&mut b, EXTERNAL_ATTRS);
    put32(
        &mut b,
        if zip64_offset {
            u32::MAX
        } else {
            e.offset as u32
        },
    );
    b.extend_from_slice(e.name.as_bytes());
    if zip64 {
        put16(&mut b, ZIP64_EXTRA_ID);
        put16(&mut b, extra.len() as u16);
        b.extend_from_slice(&extra);
    }
    b
}

/// The records after the central directory: ZIP64 end record and locator when
/// `zip64`, then the classic end record.
pub fn end_records(count: u64, cd_size: u64, cd_start: u64, zip64: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(98);
    if zip64 {
        let zip64_end_at = cd_start + cd_size;
        put32(&mut b, ZIP64_END_SIG);
        put64(&mut b, 44); // the record's size after this field
        put16(&mut b, MADE_BY);
        put16(&mut b, VERSION_ZIP64);
        put32(&mut b, 0);
        put32(&mut b, 0);
        put64(&mut b, count);
        put64(&mut b, count);
        put64(&mut b, cd_size);
        put64(&mut b, cd_start);
        put32(&mut b, ZIP64_LOCATOR_SIG);
        put32(&mut b, 0);
        put64(&mut b, zip64_end_at);
        put32(&mut b, 1);
    }
    let count16 = if zip64 { u16::MAX } else { count as u16 };
    put32(&mut b, END_SIG);
    put16(&mut b, 0);
    put16(&mut b, 0);
    put16(&mut b, count16);
    put16(&mut b, count16);
    put32(&mut b, if zip64 { u32::MAX } else { cd_size as u32 });
    put32(&mut b, if zip64 { u32::MAX } else { cd_start as u32 });
    put16(&mut b, 0); // comment
    b
}

/// Whether the end of an archive needs the ZIP64 records.
pub fn end_needs_zip64(count: u64, cd_size: u64, cd_start: u64) -> bool {
    count >= CLASSIC_COUNT_MAX || cd_size >= CLASSIC_MAX || cd_start >= CLASSIC_MAX
}

/// What local headers and central records share: version needed, flags, method
/// (stored), time and date.
fn put_entry_fields(b: &mut Vec<u8>, zip64: bool, dos_time: u16, dos_date: u16) {
    put16(
        b,
        if zip64 {
            VERSION_ZIP64
        } else {
            VERSION_CLASSIC
        },
    );
    put16(b, FLAGS);
    put16(b, 0);
    put16(b, dos_time);
    put16(b, dos_date);
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole archive of `files`, every ZIP64 form used or none.
    fn archive(files: &[(&str, &[u8])], zip64: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entries = Vec::new();
        let (dos_time, dos_date) = dos_date_time(1_764_000_000);
        for (name, data) in files {
            let offset = out.len() as u64;
            out.extend(local_header(name, dos_time, dos_date, zip64));
            out.extend_from_slice(data);
            let crc = crc32fast::hash(data);
            out.extend(data_descriptor(crc, data.len() as u64, zip64));
            entries.push(Entry {
                name: (*name).to_owned(),
                dos_time,
                dos_date,
                crc,
                size: data.len() as u64,
                offset,
            });
        }
        let cd_start = out.len() as u64;
        for e in &entries {
            out.extend(central_record(e, zip64, zip64));
        }
        let cd_size = out.len() as u64 - cd_start;
        out.extend(end_records(entries.len() as u64, cd_size, cd_start, zip64));
        out
    }

    /// Python's zipfile reads the archive, checks every CRC and lists each entry; unzip
    /// (where installed) tests it too.
    fn python_reads(zip: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        std::fs::write(&path, zip).unwrap();
        let script = "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             assert z.testzip() is None\n\
             for i in z.infolist():\n    \
                 print(i.filename, i.file_size, i.date_time, oct(i.external_attr >> 16), len(z.read(i)))\n";
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Ok(unzip) = std::process::Command::new("unzip")
            .arg("-tq")
            .arg(&path)
            .output()
        {
            assert!(
                unzip.status.success(),
                "unzip -t: {}",
                String::from_utf8_lossy(&unzip.stdout)
            );
        }
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn classic_and_zip64_archives_read_back() {
        let files: &[(&str, &[u8])] = &[
            ("empty", b""),
            ("dir/nested.txt", b"nested\n"),
            ("donn\u{e9}es/\u{e9}.bin", &[0u8, 1, 2, 255]),
        ];
        for zip64 in [false, true] {
            let listed = python_reads(&archive(files, zip64));
            assert_eq!(
                listed,
                "empty 0 (2025, 11, 24, 16, 0, 0) 0o100644 0\n\
                 dir/nested.txt 7 (2025, 11, 24, 16, 0, 0) 0o100644 7\n\
                 donn\u{e9}es/\u{e9}.bin 4 (2025, 11, 24, 16, 0, 0) 0o100644 4\n",
                "zip64 {zip64}"
            );
        }
    }

    #[test]
    fn dos_times_clamp_to_1980() {
        assert_eq!(dos_date_time(0), (0, (1 << 5) | 1));
        // 2026-12-02 07:15:31 UTC: seconds in two-second steps.
        let (time, date) = dos_date_time(1_796_195_731);
        assert_eq!(date, (46 << 9) | (12 << 5) | 2);
        assert_eq!(time, (7 << 11) | (15 << 5) | 15);
    }
}
