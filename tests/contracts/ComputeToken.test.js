const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { ONE, PERMIT_TYPES, tokenDomain, latest } = require("./helpers");

describe("ComputeToken", function () {
  async function deployToken() {
    const [admin, minter, stranger, holder] = await ethers.getSigners();
    const token = await (await ethers.getContractFactory("ComputeToken")).deploy(admin.address);
    return { token, admin, minter, stranger, holder };
  }

  it("has the expected metadata and roles", async function () {
    const { token, admin } = await loadFixture(deployToken);
    expect(await token.name()).to.equal("inferledger Compute Token");
    expect(await token.symbol()).to.equal("ILC");
    expect(await token.decimals()).to.equal(18n);
    expect(await token.totalSupply()).to.equal(0n);
    expect(await token.hasRole(await token.DEFAULT_ADMIN_ROLE(), admin.address)).to.equal(true);
    expect(await token.hasRole(await token.MINTER_ROLE(), admin.address)).to.equal(true);
    expect(await token.MINTER_ROLE()).to.equal(ethers.id("MINTER_ROLE"));
  });

  it("mint: MINTER_ROLE mints", async function () {
    const { token, holder } = await loadFixture(deployToken);
    await expect(token.mint(holder.address, 5n * ONE)).to.changeTokenBalance(token, holder, 5n * ONE);
    expect(await token.totalSupply()).to.equal(5n * ONE);
  });

  it("mint: a stranger is refused", async function () {
    const { token, stranger } = await loadFixture(deployToken);
    await expect(token.connect(stranger).mint(stranger.address, 1n))
      .to.be.revertedWithCustomError(token, "AccessControlUnauthorizedAccount")
      .withArgs(stranger.address, await token.MINTER_ROLE());
  });

  it("mint: a granted minter mints; grantRole by a stranger is refused", async function () {
    const { token, minter, stranger, holder } = await loadFixture(deployToken);
    const role = await token.MINTER_ROLE();
    await expect(token.connect(stranger).grantRole(role, stranger.address))
      .to.be.revertedWithCustomError(token, "AccessControlUnauthorizedAccount")
      .withArgs(stranger.address, await token.DEFAULT_ADMIN_ROLE());
    await token.grantRole(role, minter.address);
    await expect(token.connect(minter).mint(holder.address, 7n)).to.changeTokenBalance(token, holder, 7n);
  });

  it("permit: an EIP-2612 signature sets the allowance", async function () {
    const { token, holder, stranger } = await loadFixture(deployToken);
    const deadline = (await latest()) + 3600n;
    const value = 3n * ONE;
    const sig = ethers.Signature.from(
      await holder.signTypedData(await tokenDomain(await token.getAddress()), PERMIT_TYPES, {
        owner: holder.address,
        spender: stranger.address,
        value,
        nonce: 0n,
        deadline,
      })
    );
    await token.permit(holder.address, stranger.address, value, deadline, sig.v, sig.r, sig.s);
    expect(await token.allowance(holder.address, stranger.address)).to.equal(value);
    expect(await token.nonces(holder.address)).to.equal(1n);
  });
});
