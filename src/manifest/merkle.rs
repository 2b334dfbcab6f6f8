//! RFC 6962 §2.1 Merkle Tree Hash over the manifest's device lines, so a removed, added,
//! reordered or edited line changes the root even where the signature is not checked.
//!
//! `MTH({}) = SHA-256()`, `MTH({d0}) = SHA-256(0x00 ‖ d0)`, and for n > 1 with k the largest
//! power of two smaller than n: `MTH(D[n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))`.

use sha2::{Digest, Sha256};

/// Leaf hash: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The Merkle Tree Hash of leaves given as their leaf hashes.
pub fn root_of_hashes(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n);
            node_hash(&root_of_hashes(&leaves[..k]), &root_of_hashes(&leaves[k..]))
        }
    }
}

/// The Merkle Tree Hash of `data` (each item hashed as a leaf).
pub fn root<T: AsRef<[u8]>>(data: &[T]) -> [u8; 32] {
    let leaves: Vec<[u8; 32]> = data.iter().map(|d| leaf_hash(d.as_ref())).collect();
    root_of_hashes(&leaves)
}

/// The Merkle Tree Hash of leaves pushed one at a time, holding one hash per level: the
/// complete subtrees of the leaves so far, largest first. RFC 6962's split at the largest power
/// of two below n makes the root those subtrees folded from the right.
#[derive(Debug, Default)]
pub struct Stream {
    /// (leaf count, hash) of each complete subtree, sizes strictly decreasing powers of two.
    stack: Vec<(u64, [u8; 32])>,
}

impl Stream {
    /// Adds the next leaf (its data, hashed as a leaf here).
    pub fn push(&mut self, data: &[u8]) {
        self.push_hash(leaf_hash(data));
    }

    /// Adds the next leaf given as its leaf hash.
    pub fn push_hash(&mut self, leaf: [u8; 32]) {
        let mut node = (1u64, leaf);
        while let Some(&(size, left)) = self.stack.last() {
            if size != node.0 {
                break;
            }
            self.stack.pop();
            node = (size * 2, node_hash(&left, &node.1));
        }
        self.stack.push(node);
    }

    /// The root of the leaves pushed (SHA-256 of nothing for none).
    pub fn root(&self) -> [u8; 32] {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return Sha256::digest([]).into();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

fn largest_power_of_two_below(n: usize) -> usize {
    debug_assert!(n > 1);
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference leaves and tree heads of RFC 6962 implementations (as in
    /// google/certificate-transparency-go `merkle` and the C++ log's merkle_tree_test).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn rfc6962_reference_roots() {
        let data: Vec<Vec<u8>> = LEAVES.iter().map(|h| hex::decode(h).unwrap()).collect();
        for n in 0..=8 {
            assert_eq!(hex::encode(root(&data[..n])), ROOTS[n], "tree size {n}");
        }
    }

    #[test]
    fn stream_matches_recursive_root() {
        for n in 0..70usize {
            let data: Vec<Vec<u8>> = (0..n).map(|i| i.to_le_bytes().to_vec()).collect();
            let mut s = Stream::default();
            for d in &data {
                s.push(d);
            }
            assert_eq!(s.root(), root(&data), "tree size {n}");
        }
    }

    #[test]
    fn order_matters_and_split_is_not_midpoint() {
        let a = root(&[b"a", b"b", b"c"]);
        assert_ne!(a, root(&[b"b", b"a", b"c"]));
        // Size 3 splits 2|1: H(H(a,b), c), not H(a, H(b,c)).
        let (la, lb, lc) = (leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c"));
        assert_eq!(a, node_hash(&node_hash(&la, &lb), &lc));
    }
}
