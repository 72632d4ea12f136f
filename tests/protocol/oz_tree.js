// Reference Merkle trees for tests/protocol/test_merkle.py, computed by OpenZeppelin's
// @openzeppelin/merkle-tree. stdin: JSON list of trees, each a list of [address, amount-string].
// stdout: JSON list of {root, leafHashes, proofs}, leafHashes and proofs in input order.
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((values) => {
    const tree = StandardMerkleTree.of(values, ["address", "uint256"]);
    return {
      root: tree.root,
      leafHashes: values.map((v) => tree.leafHash(v)),
      proofs: values.map((_, i) => tree.getProof(i)),
    };
  });
  process.stdout.write(JSON.stringify(out));
});
