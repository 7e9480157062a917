//! Node tokens: the secret a node record is made with.

/// A node token: 128 random bits, hex. It authenticates the node's own
/// requests, so it must not be guessable from the MAC or the time.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    // The OS RNG failing means the machine is unusable; there is no safe fallback.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_random_bits_in_hex() {
        let t = new_token();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_token(), new_token());
    }
}
