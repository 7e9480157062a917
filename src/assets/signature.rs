//! Whether a kernel (or any EFI image) carries an Authenticode signature:
//! what UEFI Secure Boot, and shim on its behalf, verifies before starting
//! it. A Linux kernel with an EFI stub is a PE image; a signed one has a
//! certificate table (the PE optional header's data directory 4) holding a
//! PKCS#7 `WIN_CERTIFICATE`. This says whether one is there, not whom it is
//! from: which keys a machine trusts is its firmware's (and shim's) business.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// What the signature check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// A PE image with a PKCS#7 certificate table.
    Signed,
    /// A PE image without one: Secure Boot firmware refuses it.
    Unsigned,
    /// Not a PE image (an arm64 Image without EFI stub, a gzip'd kernel):
    /// nothing under Secure Boot can start it.
    NotPe,
}

impl Signature {
    pub fn as_str(self) -> &'static str {
        match self {
            Signature::Signed => "signed (Authenticode)",
            Signature::Unsigned => "unsigned",
            Signature::NotPe => "not a PE image, so unsigned",
        }
    }
}

/// `WIN_CERTIFICATE` revision 2.0 and type PKCS_SIGNED_DATA.
const WIN_CERT_REVISION_2: u16 = 0x0200;
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// Reads the headers of `file` (a few hundred bytes) and says whether it is
/// signed.
pub fn signature(file: &File) -> io::Result<Signature> {
    let size = file.metadata()?.len();
    let mut dos = [0u8; 64];
    if read_exact_at(file, &mut dos, 0)?.is_none() || &dos[..2] != b"MZ" {
        return Ok(Signature::NotPe);
    }
    let pe = u64::from(u32::from_le_bytes([dos[60], dos[61], dos[62], dos[63]]));
    // PE signature, COFF header (20 bytes), then the optional header up to
    // and including data directory 4: 112 + 5·8 bytes for PE32+.
    let mut head = [0u8; 4 + 20 + 112 + 40];
    if read_exact_at(file, &mut head, pe)?.is_none() || &head[..4] != b"PE\0\0" {
        return Ok(Signature::NotPe);
    }
    let optional = 24;
    let directories = match u16::from_le_bytes([head[optional], head[optional + 1]]) {
        0x20b => optional + 112, // PE32+
        0x10b => optional + 96,  // PE32
        _ => return Ok(Signature::NotPe),
    };
    let entry = directories + 4 * 8;
    let word = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let (offset, length) = (u64::from(word(entry)), u64::from(word(entry + 4)));
    if offset == 0 || length < 8 || offset + length > size {
        return Ok(Signature::Unsigned);
    }
    let mut cert = [0u8; 8];
    if read_exact_at(file, &mut cert, offset)?.is_none() {
        return Ok(Signature::Unsigned);
    }
    let revision = u16::from_le_bytes([cert[4], cert[5]]);
    let kind = u16::from_le_bytes([cert[6], cert[7]]);
    Ok(
        if revision == WIN_CERT_REVISION_2 && kind == WIN_CERT_TYPE_PKCS_SIGNED_DATA {
            Signature::Signed
        } else {
            Signature::Unsigned
        },
    )
}

/// Fills `buf` from `offset`; `None` when the file ends first.
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<Option<()>> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal PE32+ image: DOS header, PE header at 0x80, and a
    /// certificate table of `cert` bytes (none when empty) at its end.
    fn pe(cert: &[u8]) -> File {
        let mut b = vec![0u8; 0x80 + 4 + 20 + 112 + 40];
        b[..2].copy_from_slice(b"MZ");
        b[60..64].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let opt = 0x80 + 24;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        if !cert.is_empty() {
            let at = b.len() as u32;
            let dd = opt + 112 + 32;
            b[dd..dd + 4].copy_from_slice(&at.to_le_bytes());
            b[dd + 4..dd + 8].copy_from_slice(&(cert.len() as u32).to_le_bytes());
            b.extend_from_slice(cert);
        }
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&b).unwrap();
        f
    }

    #[test]
    fn a_pkcs7_certificate_table_is_a_signature_and_nothing_else_is() {
        let mut cert = 16u32.to_le_bytes().to_vec();
        cert.extend_from_slice(&0x0200u16.to_le_bytes());
        cert.extend_from_slice(&0x0002u16.to_le_bytes());
        cert.extend_from_slice(&[0x30, 0x82, 0, 0, 0, 0, 0, 0]);
        assert_eq!(signature(&pe(&cert)).unwrap(), Signature::Signed);
        assert_eq!(signature(&pe(&[])).unwrap(), Signature::Unsigned);
        // A table of another type (an X.509 one, say) is no Authenticode signature.
        let mut x509 = cert.clone();
        x509[6] = 1;
        assert_eq!(signature(&pe(&x509)).unwrap(), Signature::Unsigned);
        let mut gz = tempfile::tempfile().unwrap();
        gz.write_all(&[0x1f, 0x8b, 8, 0]).unwrap();
        assert_eq!(signature(&gz).unwrap(), Signature::NotPe);
    }
}
