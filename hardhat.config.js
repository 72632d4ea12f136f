// Hardhat 2 configuration for the inferledger contracts.
// Compilation is fully offline: the solcjs build shipped in node_modules/solc
// (pinned to 0.8.28 in package.json) is used instead of a downloaded compiler.
require("@nomicfoundation/hardhat-chai-matchers");
require("@nomicfoundation/hardhat-ethers");

const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

const SOLC_VERSION = "0.8.28";

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) {
    return runSuper(args);
  }
  const solc = require("solc");
  const longVersion = solc.version();
  if (!longVersion.startsWith(SOLC_VERSION + "+")) {
    throw new Error(`node_modules/solc is ${longVersion}, expected ${SOLC_VERSION}`);
  }
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: SOLC_VERSION,
    longVersion,
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
    },
  },
  paths: {
    sources: "contracts",
    tests: "tests/contracts",
    artifacts: "artifacts",
    cache: "cache",
  },
  networks: {
    hardhat: { chainId: 31337 },
    localhost: {
      url: process.env.INFERLEDGER_RPC_URL || "http://127.0.0.1:8545",
    },
  },
  mocha: { timeout: 120000 },
};
