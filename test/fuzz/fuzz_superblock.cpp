// Fuzz target: meta::decode_superblock, the cache's identity as stored in
// the index (Cf::meta "superblock"), and meta::superblock_problem, the
// bounds check every opener applies to it.
// Properties: whatever the bytes, decoding returns one of its outcomes and
// never reads past them; a superblock that decodes (current or older
// version) re-encodes to exactly the input bytes; one that passes
// superblock_problem has every field within the bounds schema.hpp documents,
// and one that fails it gets a one-line reason.
#include "fuzz_check.hpp"
#include "overcache/meta/schema.hpp"

#include <cstdint>
#include <string>

using namespace overcache;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes = fuzz::as_text(data, size);
    fuzz::current_input = bytes;
    meta::Superblock sb;
    const auto how = meta::decode_superblock(bytes, sb);
    switch (how) {
    case meta::SbDecode::bad_magic:
    case meta::SbDecode::truncated:
        return 0;
    case meta::SbDecode::bad_version:
        FUZZ_CHECK(sb.version == 0 || sb.version > meta::kFormatVersion,
                   std::to_string(sb.version));
        return 0;
    case meta::SbDecode::ok:
    case meta::SbDecode::old_version:
        break;
    }
    FUZZ_CHECK((how == meta::SbDecode::ok) == (sb.version == meta::kFormatVersion),
               std::to_string(sb.version));
    FUZZ_CHECK(sb.version >= 1 && sb.version <= meta::kFormatVersion, std::to_string(sb.version));
    FUZZ_CHECK(meta::encode(sb) == bytes, "re-encoded superblock differs");
    const std::string problem = meta::superblock_problem(sb);
    if (!problem.empty()) {
        FUZZ_CHECK(fuzz::one_line(problem), problem);
        return 0;
    }
    const std::uint64_t bs = sb.bucket_size;
    FUZZ_CHECK(bs >= meta::kSbMinBucketSize && bs <= meta::kSbMaxBucketSize && (bs & (bs - 1)) == 0,
               std::to_string(bs));
    FUZZ_CHECK(sb.bucket_count >= 2 && sb.bucket_count <= UINT32_MAX,
               std::to_string(sb.bucket_count));
    FUZZ_CHECK(sb.data_offset == bs, std::to_string(sb.data_offset));
    // No overflow: (bucket_count + 1) * bucket_size < 2^32 * 2^30.
    FUZZ_CHECK(sb.cache_size == (sb.bucket_count + 1) * bs, std::to_string(sb.cache_size));
    FUZZ_CHECK(sb.data_offset + sb.bucket_count * bs == sb.cache_size,
               std::to_string(sb.cache_size));
    return 0;
}
