//! HMAC keyed with a secret of any length, without a fallible constructor: the key is made a
//! block long as RFC 2104 says (hashed when longer than a block, padded with zeros), which is what
//! HMAC does with it anyway, so the MAC is the same.

use hmac::Hmac;
use hmac::digest::{Digest, Key, KeyInit};
use sha2::Sha256;

/// HMAC-SHA256 keyed with `key`.
pub fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    let mut block = Key::<Hmac<Sha256>>::default();
    fill(&mut block, key, |k| Sha256::digest(k).to_vec());
    Hmac::<Sha256>::new(&block)
}

/// HMAC-SHA1 keyed with `key` (Twilio's webhook signatures).
pub fn hmac_sha1(key: &[u8]) -> Hmac<sha1::Sha1> {
    let mut block = Key::<Hmac<sha1::Sha1>>::default();
    fill(&mut block, key, |k| sha1::Sha1::digest(k).to_vec());
    Hmac::<sha1::Sha1>::new(&block)
}

/// Writes `key` (or its digest, when it is longer than a block) at the start of `block`.
fn fill(block: &mut [u8], key: &[u8], digest: impl Fn(&[u8]) -> Vec<u8>) {
    let hashed;
    let key = if key.len() > block.len() {
        hashed = digest(key);
        hashed.as_slice()
    } else {
        key
    };
    for (b, k) in block.iter_mut().zip(key) {
        *b = *k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;

    #[test]
    fn keys_of_any_length_give_the_mac_hmac_gives() {
        for len in [0, 1, 20, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut ours = hmac_sha256(&key);
            let mut theirs = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            ours.update(b"message");
            theirs.update(b"message");
            assert_eq!(ours.finalize().into_bytes(), theirs.finalize().into_bytes(), "sha256, {len} bytes");
            let mut ours = hmac_sha1(&key);
            let mut theirs = <Hmac<sha1::Sha1> as Mac>::new_from_slice(&key).unwrap();
            ours.update(b"message");
            theirs.update(b"message");
            assert_eq!(ours.finalize().into_bytes(), theirs.finalize().into_bytes(), "sha1, {len} bytes");
        }
    }
}
