// Reference Merkle trees for tests/protocol/test_merkle.py, computed by OpenZeppelin's
// @openzeppelin/merkle-tree. stdin: JSON list of trees, each a list of [address, amount-string].
// stdout: JSON list of {root, leafHashes, proofs}, leafHashes and proofs in input order.
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const parsed = JSON.parse(input);
  const types = Array.isArray(parsed) ? ["address", "uint256"] : parsed.types;
  const trees = Array.isArray(parsed) ? parsed : parsed.trees;
  const out = trees.map((values) => {
    const tree = StandardMerkleTree.of(values, types);
    return {
      root: tree.root,
      leafHashes: values.map((v) => tree.leafHash(v)),
      proofs: values.map((_, i) => tree.getProof(i)),
    };
  });
  process.stdout.write(JSON.stringify(out));
});
