// Verify proofs with OpenZeppelin's own @openzeppelin/merkle-tree (StandardMerkleTree.verify).
// stdin: JSON list of {root, types, value, proof}; stdout: JSON list of booleans, in order.
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map(({ root, types, value, proof }) => {
    try {
      return StandardMerkleTree.verify(root, types, value, proof);
    } catch (err) {
      return false; // a malformed value or proof does not verify
    }
  });
  process.stdout.write(JSON.stringify(out));
});
